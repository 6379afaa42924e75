"""Horizon, the ONE dashboard of every region, beside the shared Keystone (seed 000
step 9). A stack runs it when its `services` name `dashboard` (the Keystone stack,
usually): Apache with mod_wsgi on the controller, Horizon from the release's
virtualenv, sessions in files on its node (never in memcached), HTTPS unless plainHttp. The region
picker comes from the token's catalog (no AVAILABLE_REGIONS: there is one Keystone),
and the web root sends users to /dashboard/ (seed 000's redirect page). Apache
answers on the node's own address, also in an HA region (not behind HAProxy)."""
from components.registry.context import NodeContext, RegionContext
from components.registry.model import ConfigFile, Ready, ServiceDefinition, Step, Unit
from components.tls_paths import SERVER_PEM

SETTINGS_DIR = "/etc/openstack-dashboard"
LOCAL_SETTINGS = f"{SETTINGS_DIR}/local_settings.py"
APACHE_SITE = "/etc/apache2/sites-available/openstack-dashboard.conf"
WEB_ROOT_PAGE = "/var/www/html/index.html"
STATIC_ROOT = "/var/lib/openstack-dashboard/static"
SESSION_DIR = "/var/lib/horizon/sessions"  # only horizon reads and writes it
# Horizon's own settings package imports local/local_settings.py: a link to the file above.
PACKAGE_SETTINGS = "{venv}/lib/python3.11/site-packages/openstack_dashboard/local/local_settings.py"
MANAGE = "env DJANGO_SETTINGS_MODULE=openstack_dashboard.settings PYTHONWARNINGS=ignore {venv}/bin/django-admin"


def local_settings(ctx: RegionContext, node: NodeContext) -> dict:
    return {
        "region": ctx.region,
        "keystone_url": ctx.keystone_v3,
        "allowed_hosts": list(dict.fromkeys(h for h in (ctx.controller_address, node.address, node.host) if h)),
        "session_dir": SESSION_DIR,
        "secret_key": ctx.extra.get("dashboard_secret_key"),
        "static_root": STATIC_ROOT,
        "https": bool(ctx.ca_file),
        "ca_file": ctx.ca_file,
    }


def apache_site(ctx: RegionContext, node: NodeContext) -> dict:
    return {"region": ctx.region, "address": node.address, "venv": ctx.venv, "static_root": STATIC_ROOT,
            # Apache serves TLS itself, also in an HA region (Horizon is not behind HAProxy).
            "server_pem": SERVER_PEM if ctx.ca_file else None}


def web_root_page(ctx: RegionContext, node: NodeContext) -> dict:
    return {"region": ctx.region, "dashboard_url": "/dashboard/"}


SERVICE = ServiceDefinition(
    name="horizon",
    selectors=("dashboard",),
    files=(
        ConfigFile(LOCAL_SETTINGS, "horizon/local_settings.py.j2", ("controller",), local_settings, oslo=False),
        ConfigFile(APACHE_SITE, "horizon/apache-site.conf.j2", ("controller",), apache_site, oslo=False,
                   mode="0644", group="root"),
        ConfigFile(WEB_ROOT_PAGE, "horizon/redirect.html.j2", ("controller",), web_root_page, oslo=False,
                   mode="0644", group="root"),
    ),
    units=(Unit("apache2", ("controller",), (LOCAL_SETTINGS, APACHE_SITE), packaged=True,
                description="OpenStack Dashboard (Apache)",
                ready=Ready("url", path="{scheme}://{address}/dashboard/auth/login/")),),
    pip={"*": ("horizon",)},
    apt={"*": ("apache2", "libapache2-mod-wsgi-py3")},
    setup=(
        Step("horizon-settings", ("controller",),
             f"ln -sfn {LOCAL_SETTINGS} {PACKAGE_SETTINGS} && install -d -o horizon -g horizon -m 0700 {SESSION_DIR}"),
        # Static files collected and compressed once per release (as kolla and OSA do).
        Step("horizon-static", ("controller",),
             f"set -e; install -d -m 0755 {STATIC_ROOT}; "
             f"{MANAGE} collectstatic --noinput --clear -v0; {MANAGE} compress --force -v0"),
        Step("horizon-apache", ("controller",),
             "a2enmod -q ssl wsgi headers rewrite >/dev/null; a2dissite -q 000-default >/dev/null 2>&1 || true; "
             "a2ensite -q openstack-dashboard >/dev/null"),
    ),
)
