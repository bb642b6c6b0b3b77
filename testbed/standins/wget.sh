#!/bin/sh
# /usr/local/bin/wget in the clawguard test-bed sandbox: busybox wget, except that
# -T/--timeout is done with `timeout`, because Debian 12's busybox-static 1.35
# wget segfaults whenever -T is given (even `wget -T 5 http://127.0.0.1:1/`).
t=
n=$#
while [ "$n" -gt 0 ]; do
	a=$1
	shift
	n=$((n - 1))
	case $a in
	-T | --timeout)
		t=${1:-}
		[ "$n" -gt 0 ] && shift && n=$((n - 1))
		;;
	-T*) t=${a#-T} ;;
	--timeout=*) t=${a#--timeout=} ;;
	*) set -- "$@" "$a" ;;
	esac
done
if [ -n "$t" ]; then
	exec timeout "$t" /bin/busybox wget "$@"
fi
exec /bin/busybox wget "$@"
