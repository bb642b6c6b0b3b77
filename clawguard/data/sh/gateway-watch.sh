# Waits for a gateway clawguard started (gateway.Gateway.watch), from inside the pod: one
# session instead of a new one per probe. Arguments: the seconds to wait at most, the seconds
# between probes, the probe script (gateway-health.sh) and the health URL. Runs the probe until
# something answers (its status line is not 000) or the time is up, and prints the last probe's
# output, as the probe does.
# shellcheck shell=sh
end=$(($(date +%s) + $1)) every=$2 probe=$3 url=$4
nl='
'
while :; do
  out=$(sh -c "$probe" sh "$url")
  [ "${out%%"$nl"*}" = 000 ] || break
  [ "$(date +%s)" -lt "$end" ] || break
  sleep "$every" 2>/dev/null || sleep 1
done
printf "%s" "$out"
