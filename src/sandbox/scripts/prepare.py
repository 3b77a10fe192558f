# mcp-code-executor: hands an environment volume to the run user. Runs as root with CAP_CHOWN
# only, offline. argv: prefix uid gid interpreter. Prints {"interpreter": <exists>}.
# The prefix itself is handed over last, so its owner says whether the work is complete.
import json
import os
import sys

prefix, uid, gid, interpreter = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
st = os.lstat(prefix)
if (st.st_uid, st.st_gid) != (uid, gid):
    for root, dirs, files in os.walk(prefix, topdown=False):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), uid, gid)
    os.lchown(prefix, uid, gid)
print(json.dumps({"interpreter": os.path.exists(interpreter)}))
