# Asks the gateway for its health (gateway.Gateway). Argument: the URL. Prints the HTTP status
# on the first line (000: nothing answered, the connection was refused; "timeout": something
# accepted it but gave no answer within 5 s), then the body. curl where it exists (NemoClaw's
# image: exit 28 is its timeout), else busybox wget under `timeout` (exit 124, or 143 from
# busybox's own timeout) where there is one: busybox wget's own -T crashes Debian's busybox.
# shellcheck shell=sh
if command -v curl >/dev/null 2>&1; then
  out=$(curl -s --max-time 5 -w "\n%{http_code}" "$1"); rc=$?
  # The status is the last line, the body everything before it.
  code=${out##*"
"}; body=${out%"
"*}
  [ "$rc" = 28 ] && code=timeout
else
  t=; command -v timeout >/dev/null 2>&1 && t="timeout 5"
  head=$($t wget -S -q -O /dev/null "$1" 2>&1); rc=$?
  code=$(printf "%s\n" "$head" | sed -n "s/^ *HTTP\/[0-9.]* \([0-9]*\).*/\1/p" | tail -n 1)
  case $rc in 124 | 143) [ -z "$code" ] && code=timeout ;; esac
  [ "$code" = timeout ] || body=$($t wget -q -O - "$1" 2>/dev/null)
fi
printf "%s\n%s" "${code:-000}" "$body"
