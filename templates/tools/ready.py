# Managed by openstack-multiregion (Pulumi); local edits are overwritten.
"""Is a unit of this node really working? Exit 0 when it is; otherwise name the
unit, say why, show the last lines of its journal, and exit 1.

    ready.py UNIT KIND [--config FILE] [--service-type T] [--path P] [--binary B]
             [--host H] [--url U] [--cafile F] [--timeout S]

KIND:
  api              an authenticated GET of P on service type T's internal endpoint
                   in this region answers 2xx (with --address: on this node's own
                   address, the endpoint's port and path)
  compute-service  the compute API lists binary B on host H, state up
  volume-service   the volume API lists binary B on host H, state up
  network-agent    the network API lists binary B on host H, alive
  token            Keystone at U answers a token request (a wrong password: 401)
  url              a GET of U answers 2xx (a page that needs no token: the dashboard's)
  active           the unit runs

The credentials are the service's own: [keystone_authtoken] (or [service_user])
of FILE, so the check goes through this region's catalog exactly as the service
does, and it verifies TLS with that section's cafile (or --cafile). In every case the unit must also be running, and still the same process a
few seconds later: a worker that dies right after it first answered fails here.
"""
import argparse
import configparser
import subprocess
import sys
import time

SETTLE_SECONDS = 3
# This tool runs right after `systemctl restart` returned, so a heartbeat written after
# it started comes from the new process.
STARTED = time.time()
CRASH_LOOP = 3  # automatic restarts after which the unit is not coming up


def unit_show(unit, *properties):
    out = subprocess.run(["systemctl", "show", *(f"-p{p}" for p in properties), unit],
                         capture_output=True, text=True).stdout
    values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return [values.get(p, "") for p in properties]


def unit_state(unit):
    return tuple(unit_show(unit, "ActiveState", "MainPID"))


def session_from(config_file):
    from keystoneauth1 import session
    from keystoneauth1.identity import v3

    conf = configparser.ConfigParser(interpolation=None, strict=False)
    conf.read(config_file)
    section = next(s for s in ("keystone_authtoken", "service_user") if conf.has_option(s, "password"))
    def get(key):  # undo what the program's oslo.config escaping did (quotes, `$$`)
        value = conf.get(section, key).strip()
        if len(value) > 1 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        return value.replace("$$", "$")

    auth = v3.Password(auth_url=get("auth_url"), username=get("username"), password=get("password"),
                       project_name=get("project_name"), user_domain_name=get("user_domain_name"),
                       project_domain_name=get("project_domain_name"))
    verify = get("cafile") if conf.has_option(section, "cafile") else True
    # The timeout covers the token request too: a Keystone that never answers fails the
    # check (and the readiness window) instead of hanging it.
    return session.Session(auth=auth, verify=verify, timeout=10), get("region_name")


def on_node(url, address):
    """The catalog's URL with this node's own address: the process just restarted here
    must answer, not whichever controller is behind a VIP."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{address}:{parts.port}" if parts.port else address))


def check_api(args):
    sess, region = session_from(args.config)
    headers = {"OpenStack-API-Version": "placement 1.1"} if args.service_type == "placement" else {}
    endpoint = sess.get_endpoint(service_type=args.service_type, interface="internal", region_name=region)
    url = (on_node(endpoint, args.address) if args.address else endpoint).rstrip("/") + args.path
    response = sess.get(url, headers=headers, raise_exc=False, timeout=10)
    return response.status_code < 300, f"GET {url} ({args.service_type} in {region}): HTTP {response.status_code}"


def heartbeat_after(since):
    """A service list entry whose heartbeat (updated_at, UTC) is newer than `since`
    (epoch seconds): right after a restart the OLD process's last heartbeat still reads
    `up` for up to a minute, so `up` alone proves nothing about the new one. The
    database keeps whole seconds, so only a stamp in a later second than `since` is
    surely newer (the next heartbeat comes within report_interval, 10 s)."""
    from datetime import datetime, timezone

    def fresh(entry):
        stamp = entry.get("updated_at")
        if not stamp:
            return False
        when = datetime.fromisoformat(stamp.replace("Z", "")).replace(tzinfo=timezone.utc).timestamp()
        return when >= int(since) + 1
    return fresh


def listed(args, path, key, good):
    sess, region = session_from(args.config)
    response = sess.get(path, endpoint_filter={"service_type": args.service_type, "interface": "internal",
                                               "region_name": region}, raise_exc=False, timeout=10)
    if response.status_code >= 300:
        return False, f"GET {path} in {region}: HTTP {response.status_code}"
    found = [s for s in response.json().get(key, []) if s.get("binary") == args.binary and s.get("host") == args.host]
    state = ", ".join(str({k: s.get(k) for k in ("state", "status", "alive", "updated_at")}) for s in found) \
        or "not listed"
    return any(good(s) for s in found), f"{args.binary} on {args.host} in {region}: {state}"


def tls_context(args):
    import ssl
    return ssl.create_default_context(cafile=args.cafile or None)


def check_url(args):
    import urllib.request
    with urllib.request.urlopen(args.url, timeout=10, context=tls_context(args)) as response:
        return response.status < 300, f"GET {args.url}: HTTP {response.status}"


def check_token(args):
    import json
    import urllib.error
    import urllib.request

    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "openstack-multiregion-readiness", "domain": {"id": "default"}, "password": "not-a-password"}}}}}
    request = urllib.request.Request(args.url.rstrip("/") + "/auth/tokens", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(request, timeout=10, context=tls_context(args))
        return False, "a wrong password was accepted"
    except urllib.error.HTTPError as err:
        return err.code == 401, f"POST {args.url}auth/tokens: HTTP {err.code}"


CHECKS = {
    "api": check_api,
    "compute-service": lambda a: listed(a, "/os-services", "services",
                                        lambda s: s.get("state") == "up" and s.get("status") == "enabled"
                                        and heartbeat_after(STARTED)(s)),
    "volume-service": lambda a: listed(a, "/os-services", "services",
                                       lambda s: s.get("state") == "up" and heartbeat_after(STARTED)(s)),
    "network-agent": lambda a: listed(a, "/v2.0/agents", "agents", lambda s: s.get("alive") is True),
    "token": check_token,
    "url": check_url,
    "active": lambda a: (True, "running"),
}


def wait_until_ready(args):
    deadline = time.time() + args.timeout
    reason = "not checked"
    restarts_before = int(unit_show(args.unit, "NRestarts")[0] or 0)
    while time.time() < deadline:
        state, pid = unit_state(args.unit)
        if state == "failed":
            return False, "the unit failed"
        restarts = int(unit_show(args.unit, "NRestarts")[0] or 0) - restarts_before
        if restarts >= CRASH_LOOP:
            return False, f"the unit keeps failing: systemd restarted it {restarts} times ({reason})"
        if state == "active":
            try:
                ok, reason = CHECKS[args.kind](args)
            except Exception as err:  # noqa: BLE001 - not answering yet: keep trying
                ok, reason = False, f"{type(err).__name__}: {err}"
            if ok:
                time.sleep(SETTLE_SECONDS)
                if unit_state(args.unit) == ("active", pid):
                    return True, reason
                reason = "the unit restarted right after it answered"
        else:
            reason = f"the unit is {state or 'unknown'}"
        time.sleep(1)
    return False, reason


def main():
    p = argparse.ArgumentParser()
    p.add_argument("unit")
    p.add_argument("kind", choices=sorted(CHECKS))
    for option in ("--config", "--service-type", "--path", "--binary", "--host", "--url", "--cafile", "--address"):
        p.add_argument(option, default="")
    p.add_argument("--timeout", type=float, default=180)
    args = p.parse_args()
    started = time.time()
    ok, reason = wait_until_ready(args)
    if ok:
        print(f"{args.unit}: ready after {time.time() - started:.1f}s ({reason})")
        return 0
    journal = subprocess.run(["journalctl", "-u", args.unit, "-n", "20", "--no-pager", "-o", "cat"],
                             capture_output=True, text=True).stdout
    # The verdict last: whoever shows only the end of this still reads it.
    print(f"last lines of the journal of {args.unit}:\n{journal.rstrip()}\n"
          f"unit {args.unit} is not ready after {time.time() - started:.0f}s: {reason}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
