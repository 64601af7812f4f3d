#!/usr/bin/env bash
# Packs the build dependencies the lent GPU machine lacks into .deps/ (gitignored), to be
# carried there with run's `carry: [".deps"]`: that machine reaches no package registry.
#
#   .deps/include/{nlohmann,CLI,pcre2.h}
#   .deps/share/cmake/{nlohmann_json,CLI11}/   CMake configs; they locate their headers
#                                              relative to themselves (../../include)
#   .deps/lib/libpcre2-8.so*                   (only libc needed at run time)
#   .deps/lib/pkgconfig/libpcre2-8.pc          prefix=@DEPS@, rewritten by run_gpu_parity.sh
#
# Run here, from the repository root, after ./setup.sh installed the Debian packages.
set -euo pipefail
cd "$(dirname "$0")/../.."
multiarch=/usr/lib/x86_64-linux-gnu
for p in /usr/include/nlohmann /usr/include/CLI /usr/include/pcre2.h /usr/share/cmake/nlohmann_json \
         /usr/share/cmake/CLI11 "$multiarch/libpcre2-8.so.0" "$multiarch/pkgconfig/libpcre2-8.pc"; do
    [ -e "$p" ] || { echo "pack_deps: $p is missing (apt-get install nlohmann-json3-dev libcli11-dev libpcre2-dev)" >&2; exit 1; }
done

rm -rf .deps
mkdir -p .deps/include .deps/share/cmake .deps/lib/pkgconfig
cp -r /usr/include/nlohmann /usr/include/CLI /usr/include/pcre2.h .deps/include/
cp -r /usr/share/cmake/nlohmann_json /usr/share/cmake/CLI11 .deps/share/cmake/
cp -a "$multiarch"/libpcre2-8.so* .deps/lib/     # the .so link, the .so.0 link and the file
# Debian's .pc puts libdir under the multiarch folder; here it is plain lib/.
sed -e 's|^prefix=.*|prefix=@DEPS@|' -e 's|^libdir=.*|libdir=${prefix}/lib|' \
    "$multiarch/pkgconfig/libpcre2-8.pc" > .deps/lib/pkgconfig/libpcre2-8.pc
du -sh .deps
