"""Echo trial's output and end with one line `N passed, N failed`; exit non-zero unless tests ran and all passed."""

import re
import sys

verdict = None
for line in sys.stdin:
    sys.stdout.write(line)
    sys.stdout.flush()
    m = re.match(r"^(PASSED|FAILED)(?: \((.*)\))?\s*$", line)
    if m:
        verdict = (m.group(1), {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2) or "")})
if verdict is None:
    print("0 passed, 1 failed")
    sys.exit(1)
word, counts = verdict
passed = counts.get("successes", 0) + counts.get("expectedFailures", 0)
failed = counts.get("failures", 0) + counts.get("errors", 0) + counts.get("unexpectedSuccesses", 0)
print(f"{passed} passed, {failed} failed, {counts.get('skips', 0)} skipped")
sys.exit(1 if word == "FAILED" or failed or passed == 0 else 0)
