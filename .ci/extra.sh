# Sourced by .ci/run after the project is installed: what the tests need beyond Python packages.
# Headless Chromium (Debian's package) for the leaderboard page tests in tests/test_leaderboard.py.
command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
