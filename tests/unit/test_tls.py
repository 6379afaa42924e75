"""TLS in every file a node gets: HTTPS URLs, the CA in every client section, MariaDB
and RabbitMQ over TLS, the token cache encrypted; and the certificates the program
makes verify as a client would verify them."""
from __future__ import annotations

import dataclasses
import re
import ssl

import pytest

from components import ha_configs as ha
from components.certificates import new_ca, new_server_certificate
from components.databases import database_url
from components.region_tls import ca_bundle
from components.service_configs import node_files
from components.tls_paths import CA_FILE, SERVER_PEM
from tests.unit.test_service_configs import ALL_SERVICES, COMPUTE, CONTROLLER, ctx, ini  # noqa: F401 - fixture

TLS_SERVICES = ALL_SERVICES + ("dashboard",)


@pytest.fixture
def tls_ctx(ctx):  # noqa: F811 - the fixture above, with TLS
    return dataclasses.replace(
        ctx, keystone_url="https://192.168.80.83:5000", ca_file=CA_FILE, server_pem=SERVER_PEM,
        memcache_secret_key="memcache-key", transport_url=ha.transport_url("openstack", "rabbit-secret", [CONTROLLER],
                                                                             tls=True),
        database_connections={k: database_url("u", k, "p", CONTROLLER, CA_FILE) for k in ctx.database_connections},
        extra={"dashboard_secret_key": "django-secret"})


def every_file(ctx):  # noqa: F811
    return {**node_files(ctx, CONTROLLER, ("controller",), TLS_SERVICES, "ctl2"),
            **{f"compute:{p}": t for p, t in node_files(ctx, COMPUTE, ("compute",), ALL_SERVICES, "cmp2").items()}}


def test_no_plain_http_url_is_left_in_any_file(tls_ctx):
    files = every_file(tls_ctx)
    plain = {p: re.findall(r"http://\S+", t) for p, t in files.items() if "http://" in t}
    assert plain == {}
    assert "https://192.168.80.83:5000/v3" in files["/etc/nova/nova.conf"]


def test_every_keystoneauth_section_verifies_with_the_ca(tls_ctx):
    for path, text in every_file(tls_ctx).items():
        if not path.endswith(".conf") or "auth_url" not in text:
            continue
        conf = ini(text)
        for section in conf.sections():
            if conf.has_option(section, "auth_url"):
                assert conf.get(section, "cafile") == CA_FILE, (path, section)


def test_the_token_cache_is_encrypted_with_the_generated_key(tls_ctx):
    conf = ini(every_file(tls_ctx)["/etc/nova/nova.conf"])
    assert conf.get("keystone_authtoken", "memcache_security_strategy") == "ENCRYPT"
    assert conf.get("keystone_authtoken", "memcache_secret_key") == "memcache-key"


def test_database_and_queue_connections_use_tls(tls_ctx):
    conf = ini(every_file(tls_ctx)["/etc/nova/nova.conf"])
    assert conf.get("database", "connection").endswith(f"/nova?ssl_ca={CA_FILE}")
    assert ":5671/" in conf.get("DEFAULT", "transport_url")
    assert conf.get("oslo_messaging_rabbit", "ssl") == "true"
    assert conf.get("oslo_messaging_rabbit", "ssl_ca_file") == CA_FILE
    compute = ini(every_file(tls_ctx)["compute:/etc/nova/nova.conf"])
    assert compute.get("oslo_messaging_rabbit", "ssl_ca_file") == CA_FILE


def test_plain_http_files_name_no_tls_at_all(ctx):  # noqa: F811
    for text in every_file(dataclasses.replace(ctx, extra={"dashboard_secret_key": "k"})).values():
        assert "https://" not in text and CA_FILE not in text and "memcache_secret_key" not in text


def test_the_dashboard_is_https_only_with_secure_cookies(tls_ctx):
    files = every_file(tls_ctx)
    site = files["/etc/apache2/sites-available/openstack-dashboard.conf"]
    assert f"SSLCertificateFile {SERVER_PEM}" in site and "RewriteRule ^ https://" in site
    assert "SESSION_COOKIE_SECURE = True" in files["/etc/openstack-dashboard/local_settings.py"]
    assert f'OPENSTACK_SSL_CACERT = "{CA_FILE}"' in files["/etc/openstack-dashboard/local_settings.py"]


def test_haproxy_ends_tls_on_the_vip_and_mariadb_and_rabbitmq_require_it():
    controllers = tuple(ha.HaController(f"ctl{i}", f"172.16.181.{30 + i}") for i in (1, 2, 3))
    spec = ha.HaSpec(region="RegionOne", vip="172.16.181.30", controllers=controllers, vrrp_password="vrrp1234",
                     stats_password="stats-Secret-99", erlang_cookie="C" * 20, apis=("image",),
                     server_pem=SERVER_PEM, ca_file=CA_FILE)
    files = ha.ha_node_files(spec, controllers[0])
    assert f"bind 172.16.181.30:9292 ssl crt {SERVER_PEM}" in files[ha.HAPROXY_CFG]
    assert "require_secure_transport = ON" in files[ha.GALERA_CNF]
    assert "listeners.ssl.1 = 172.16.181.31:5671" in files[ha.RABBITMQ_CONF]
    assert "listeners.tcp = none" in files[ha.RABBITMQ_CONF]


def test_a_generated_certificate_verifies_for_its_addresses_only(tmp_path):
    ca_cert, ca_key = new_ca("test CA")
    cert, key = new_server_certificate(ca_cert, ca_key, "ctl1", ["192.0.2.10", "ctl1"])
    (tmp_path / "ca.pem").write_text(ca_cert)
    (tmp_path / "server.pem").write_text(cert + key)
    client = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(str(tmp_path / "server.pem"))
    assert handshake(client, server, "192.0.2.10") is None
    assert "mismatch" in handshake(client, server, "192.0.2.11")
    other_ca, _ = new_ca("another CA")
    (tmp_path / "other.pem").write_text(other_ca)
    stranger = ssl.create_default_context(cafile=str(tmp_path / "other.pem"))
    assert "certificate verify failed" in handshake(stranger, server, "192.0.2.10")


def handshake(client: ssl.SSLContext, server: ssl.SSLContext, name: str):
    """A TLS handshake in memory; None, or the client's error."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(c_in, c_out, server_hostname=name)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side in (c, s):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as err:
                return str(err) if side is c else handshake_error(c, c_in, s_out)
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    return None


def handshake_error(c, c_in, s_out):
    c_in.write(s_out.read())
    try:
        c.do_handshake()
    except ssl.SSLError as err:
        return str(err)
    return "the server failed"


def test_the_ca_bundle_holds_each_certificate_once():
    one, _ = new_ca("one")
    two, _ = new_ca("two")
    bundle = ca_bundle(one, two, one)
    assert bundle.count("BEGIN CERTIFICATE") == 2


# --- config: TLS by default, plain HTTP only when asked, the operator's material whole --------

def test_tls_is_the_default_and_plain_http_must_be_asked_for():
    from components.settings import parse
    from tests.unit.test_settings import valid
    assert parse(valid()).scheme == "https"
    assert parse(valid(plainHttp="true")).scheme == "http"


@pytest.mark.parametrize("raw, key", [
    ({"serviceManager": "none", "virtualenv": "/opt/venv"}, "plainHttp"),
    ({"tlsCertificate": "-----BEGIN CERTIFICATE-----\nsecret-cert"}, "tlsCa"),
    ({"plainHttp": "true", "tlsCa": "-----BEGIN CERTIFICATE-----\nx", "tlsCertificate": "-----BEGIN x",
      "tlsPrivateKey": "-----BEGIN PRIVATE KEY-----\nsecret-key"}, "tlsCa"),
    ({"tlsCa": "not pem at all", "tlsCertificate": "-----BEGIN x", "tlsPrivateKey": "-----BEGIN y"}, "tlsCa"),
])
def test_tls_config_mistakes_name_the_key_and_never_the_secret(raw, key):
    from components.settings import ConfigError, parse
    from tests.unit.test_settings import valid
    with pytest.raises(ConfigError) as err:
        parse(valid(**raw))
    message = str(err.value)
    assert f"openstack-multiregion:{key} " in message
    assert "secret-cert" not in message and "secret-key" not in message and "not pem at all" not in message


def test_admin_openrc_and_clouds_yaml_carry_the_ca(tls_ctx):
    files = node_files(tls_ctx, CONTROLLER, ("controller",), ALL_SERVICES, "ctl2")
    assert f"export OS_CACERT={CA_FILE}" in files["/root/admin-openrc"]
    assert f'cacert: "{CA_FILE}"' in files["/etc/openstack/clouds.yaml"]
