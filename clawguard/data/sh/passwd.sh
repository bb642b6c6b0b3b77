# The sandbox's users. No arguments. Prints its /etc/passwd, a line "--clawguard--", then its
# /etc/group when there is one (sandboxfs.UserTable.parse).
# shellcheck shell=sh
cat /etc/passwd; echo '--clawguard--'; cat /etc/group 2>/dev/null || true
