"""Echo tox's output and end with one line `N passed, N failed`; exit non-zero unless tests ran and all passed.

tox may run trial more than once (one environment per signature backend): the
counts of every trial summary are added up, and a tox environment that failed
outside trial (an install, a smoke command) counts as one failure.
"""

import re
import sys

verdicts = []
env_failures = 0
for line in sys.stdin:
    sys.stdout.write(line)
    sys.stdout.flush()
    m = re.match(r"^(PASSED|FAILED)(?: \((.*)\))?\s*$", line)
    if m:
        verdicts.append((m.group(1), {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2) or "")}))
    elif re.match(r"^\s+\S+: FAIL code \d+", line):
        env_failures += 1
if not verdicts:
    print("0 passed, 1 failed")
    sys.exit(1)
passed = failed = skipped = 0
for _, counts in verdicts:
    passed += counts.get("successes", 0) + counts.get("expectedFailures", 0)
    failed += counts.get("failures", 0) + counts.get("errors", 0) + counts.get("unexpectedSuccesses", 0)
    skipped += counts.get("skips", 0)
if env_failures and not failed:
    failed = env_failures
print(f"{passed} passed, {failed} failed, {skipped} skipped")
word_failed = any(word == "FAILED" for word, _ in verdicts)
sys.exit(1 if word_failed or failed or passed == 0 else 0)
