# Prints, as JSON, fail2ban's own expansion of the iptables-multiport
# action for one jail, family and IP: the exact shell commands fail2ban
# would run, so the test runs those and not a transcription of them.
import json
import sys

sys.path.insert(0, "/usr/lib/python3/dist-packages")
from fail2ban.client.actionreader import ActionReader  # noqa: E402
from fail2ban.server.action import CommandAction  # noqa: E402

name, family, ip, port = sys.argv[1:5]
r = ActionReader("iptables-multiport", name, {"port": port, "protocol": "tcp", "name": name},
                 share_config={}, basedir="/etc/fail2ban")
if not r.read():
    sys.exit("cannot read iptables-multiport")
r.getOptions({})
opts = r.getCombined()
out = {}
for k in ("actionstart", "actioncheck", "actionban", "actionunban", "actionstop"):
    out[k] = CommandAction.replaceTag(opts[k], dict(opts, ip=ip, name=name),
                                      conditional="family=" + family, cache={})
print(json.dumps(out))
