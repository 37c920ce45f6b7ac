#!/bin/sh
# Prints the package version from `git describe`, in a form both dpkg and
# rpm accept: v1.2.3 -> 1.2.3; v1.2.3-4-gabc1234 -> 1.2.3+4.gabc1234; no tag
# -> 0.0.0+git.abc1234; a dirty tree adds .dirty.
d=$(git describe --tags --always --dirty 2>/dev/null) || d=unknown
case "$d" in
v[0-9]* | [0-9]*.*) d=${d#v} ;;
*) d=0.0.0+git.$d ;;
esac
first=${d%%-*}
rest=${d#"$first"}
if [ -n "$rest" ]; then
	rest=$(printf '%s' "${rest#-}" | tr -- '-' '.')
	case "$first" in
	*+*) d=$first.$rest ;;
	*) d=$first+$rest ;;
	esac
fi
printf '%s\n' "$d"
