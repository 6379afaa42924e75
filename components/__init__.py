"""Components of the openstack-multiregion program (one ComponentResource per module)."""
