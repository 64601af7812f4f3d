#!/usr/bin/env bash
# Packs the build dependencies the lent GPU machine lacks into .deps/ (gitignored), to be
# carried there with run's `carry: [".deps"]`: that machine reaches no package registry.
#
#   .deps/include/{nlohmann,CLI,dlpack,stb,pcre2.h,utf8proc.h,sqlite3.h}
#   .deps/share/cmake/{nlohmann_json,CLI11}/   CMake configs; they locate their headers
#                                              relative to themselves (../../include)
#   .deps/lib/lib{pcre2-8,utf8proc,stb,sqlite3}.so* (only libc needed at run time; that machine
#                                              has SQLite's runtime but not its header)
#   .deps/lib/pkgconfig/*.pc                   prefix=@DEPS@, rewritten by run_gpu_parity.sh
#
# Run here, from the repository root, after ./setup.sh installed the Debian packages.
set -euo pipefail
cd "$(dirname "$0")/../.."
multiarch=/usr/lib/x86_64-linux-gnu
for p in /usr/include/nlohmann /usr/include/CLI /usr/include/dlpack /usr/include/pcre2.h /usr/include/utf8proc.h \
         /usr/include/sqlite3.h "$multiarch/libsqlite3.so.0" /usr/include/stb "$multiarch/pkgconfig/stb.pc" \
         /usr/share/cmake/nlohmann_json /usr/share/cmake/CLI11 "$multiarch/libpcre2-8.so.0" \
         "$multiarch/pkgconfig/libpcre2-8.pc" "$multiarch/pkgconfig/libutf8proc.pc"; do
    [ -e "$p" ] || { echo "pack_deps: $p is missing (run ./setup.sh build first)" >&2; exit 1; }
done

rm -rf .deps
mkdir -p .deps/include .deps/share/cmake .deps/lib/pkgconfig
cp -r /usr/include/nlohmann /usr/include/CLI /usr/include/dlpack /usr/include/pcre2.h /usr/include/utf8proc.h \
      /usr/include/sqlite3.h /usr/include/stb .deps/include/
cp -a "$multiarch"/libsqlite3.so* .deps/lib/
cp -r /usr/share/cmake/nlohmann_json /usr/share/cmake/CLI11 .deps/share/cmake/
for lib in libpcre2-8:libpcre2-8 libutf8proc:libutf8proc libstb:stb; do # library:pkg-config name
    cp -a "$multiarch/${lib%%:*}".so* .deps/lib/     # the .so link, the .so.N link and the file
    # Debian's .pc puts libdir under the multiarch folder; here it is plain lib/.
    sed -e 's|^prefix=.*|prefix=@DEPS@|' -e 's|^libdir=.*|libdir=${prefix}/lib|' \
        "$multiarch/pkgconfig/${lib#*:}.pc" > ".deps/lib/pkgconfig/${lib#*:}.pc"
done
du -sh .deps
