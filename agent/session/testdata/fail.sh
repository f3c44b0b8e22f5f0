#!/bin/sh
# Test child: writes 10 KiB of numbered stderr lines, then exits with code 3.
i=0
while [ "$i" -lt 400 ]; do
  printf 'stderr line %05d ..........\n' "$i" >&2
  i=$((i + 1))
done
echo "last words" >&2
exit 3
