#!/bin/sh
# Test child: writes $2 bytes into $1/out.bin and 64 KiB of stdout noise.
head -c "$2" /dev/zero > "$1/out.bin"
i=0
while [ "$i" -lt 1024 ]; do
  echo "noise line $i ......................................................"
  i=$((i + 1))
done
