#!/bin/sh
# Rebuild the demo guest (Guests/demo) with the Makefile's own rule and regenerate
# Sources/DemoGuest/DemoGuestImage.swift from the resulting demo.elf.
#
#   Guests/gen-demo.sh            (OUT=dir to build somewhere other than Guests/out)
set -eu
guests=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-$guests/out}
case $out in /*) ;; *) out=$(pwd)/$out ;; esac
make -s -C "$guests" OUT="$out" demo
python3 "$guests/tools/bin2swift.py" "$out/demo.elf" "$guests/../Sources/DemoGuest/DemoGuestImage.swift"
echo "wrote Sources/DemoGuest/DemoGuestImage.swift ($(wc -c < "$out/demo.elf") bytes from $out/demo.elf)"
