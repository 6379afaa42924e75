"""Where the TLS material lives on every node (pushed by components/region_tls.py,
named by every template that serves or verifies TLS)."""
TLS_DIR = "/etc/openstack-multiregion/tls"
CA_FILE = f"{TLS_DIR}/ca.pem"  # the CAs every client on the node trusts (0644)
SERVER_PEM = f"{TLS_DIR}/server.pem"  # a controller's certificate, then its key (0640)
TLS_GROUP = "openstack-tls"  # the group that reads server.pem: service users, mysql, rabbitmq, ...
