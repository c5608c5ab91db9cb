# One large package for benchmarks: SIZE_MIB MiB of incompressible data with
# the package's own store path and its glibc-like dependency embedded every
# 4 MiB, the way binaries carry store paths.
# data = "random": incompressible bytes; "code": the host's /usr/bin and
# /usr/lib binaries concatenated, which compress like real packages.
{ cross ? true, sizeMiB ? 256, data ? "random" }:
let
  system = if cross then "x86_64-linux" else "aarch64-linux";
  suffix = if cross then "-aarch64-unknown-linux-gnu" else "";
  mk = pname: script: derivation {
    name = "${pname}${suffix}-1.0";
    inherit system;
    builder = "/bin/sh";
    args = [ "-euc" script ];
    PATH = "/usr/bin:/bin";
  };
  dep = mk "benchdep" ''
    mkdir -p $out/lib
    echo dependency > $out/lib/libdep.so
  '';
in
{
  inherit dep;
  big = mk "benchbig" ''
    mkdir -p $out/bin
    i=0
    chunk() {
      if [ "${data}" = code ]; then
        find /usr/bin /usr/lib -type f -size +64k 2>/dev/null | sort | xargs cat 2>/dev/null |
          tail -c +$((i * 4194000 + 1)) | head -c 4194000
      else
        head -c 4194000 /dev/urandom
      fi
    }
    while [ $i -lt ${toString (sizeMiB / 4)} ]; do
      chunk
      printf '%s\0%s/lib/libdep.so\0' "$out" "${dep}"
      i=$((i + 1))
    done > $out/bin/big
    chmod +x $out/bin/big
  '';
}
