# A second stand-in for nixpkgs, with the names, outputs and graph shapes
# of a real closure instead of example/'s regular ones: the native stdenv
# bootstrap, compilers whose runtime libraries live in other derivations on
# each side, wrappers between every package and its libc, and build-platform
# tools whose names collide with host packages.
#
#   cross = true:  what pkgsCross.aarch64-multiplatform instantiates on
#                  x86_64-linux: every .drv has system x86_64-linux. Built for
#                  real with Debian's aarch64-linux-gnu-gcc/g++ and glibc's
#                  files from /usr/aarch64-linux-gnu/lib.
#   cross = false: what an aarch64-linux machine instantiates, bootstrap
#                  included. Only instantiated.
#
# Every builder is /bin/sh with copied files; no nixpkgs, no network. The
# attributes that link derivations are nixpkgs' own (see README.md):
# stdenv.mkDerivation's stdenv, nativeBuildInputs and buildInputs; the
# stdenv's defaultNativeBuildInputs, shell and initialPath; cc-wrapper's cc,
# bintools, libc_bin, libc_dev, libc_lib and postFixup; bintools-wrapper's
# bintools_bin and libc_*; glibc's makeFlags and postPatch; gcc's libcCross.
{ cross ? true }:

let
  hostConfig = "aarch64-unknown-linux-gnu";
  system = if cross then "x86_64-linux" else "aarch64-linux";
  # cc-wrapper's targetPrefix, and gcc's crossNameAddon without a stage.
  targetPrefix = if cross then "${hostConfig}-" else "";
  version = "13.3.0";
  # Where the build machine has the aarch64 runtime files (Debian's
  # libc6-arm64-cross, libgcc-s1-arm64-cross, libstdc++6-arm64-cross).
  debLib = "/usr/aarch64-linux-gnu/lib";

  # The derivation everything below comes down to.
  drv = { name, outputs ? [ "out" ], buildCommand ? "mkdir -p $out", ... }@args:
    derivation (builtins.removeAttrs args [ "buildCommand" ] // {
      inherit name system outputs;
      builder = "/bin/sh";
      args = [ "-euc" buildCommand ];
      PATH = "/usr/bin:/bin";
    });

  # Empty outputs other than out, so a multiple-output derivation builds.
  mkOutputs = outputs: builtins.concatStringsSep "\n"
    (map (o: "mkdir -p \$${o}") outputs);

  # stdenv/generic: the stdenv derivation holds the compiler wrapper in
  # defaultNativeBuildInputs. Its setup puts the wrapper first on PATH.
  mkStdenv = { name, cc ? null, shell, initialPath ? [ ], isCross ? false }:
    drv {
      inherit name shell initialPath;
      defaultNativeBuildInputs = if cc == null then [ ] else [ cc ];
      buildCommand = ''
        mkdir -p $out
        cat > $out/setup <<EOF
        export PATH=${if cc == null then "" else "${cc}/bin:"}/usr/bin:/bin
        export CC=${targetPrefix}gcc CXX=${targetPrefix}g++
        EOF
      '';
    } // { inherit isCross; };

  # stdenv.mkDerivation: pname[-suffix]-version. A cross stdenv for the
  # host adds the host suffix and strictDeps.
  mkDerivation = stdenv: { pname, version, outputs ? [ "out" ], buildCommand ? null, ... }@args:
    drv (builtins.removeAttrs args [ "buildCommand" ] // {
      name = "${pname}${if stdenv.isCross then "-${hostConfig}" else ""}-${version}";
      inherit pname version stdenv outputs;
      strictDeps = stdenv.isCross;
      buildCommand = ''
        . $stdenv/setup
        ${if buildCommand == null then mkOutputs outputs else buildCommand}
      '';
    });

  # pkgs/build-support/bintools-wrapper: stdenvNoCC, so no host suffix;
  # pname = targetPrefix + "binutils-wrapper" unless a name is given.
  bintoolsWrapper = { pname, version, stdenv, bintools, libc ? null, shell }:
    drv {
      name = "${pname}-${version}";
      inherit pname version stdenv shell;
      bintools_bin = bintools;
      libc_bin = if libc == null then "" else libc.bin or libc;
      libc_dev = if libc == null then "" else libc.dev or libc;
      libc_lib = if libc == null then "" else libc;
      dynamicLinker = if libc == null then "" else "ld-linux-aarch64.so.1";
      buildCommand = ''
        mkdir -p $out/bin $out/nix-support
        ${if libc == null then "" else "echo ${libc}/lib/ld-linux-aarch64.so.1 > $out/nix-support/dynamic-linker"}
      '';
    };

  # pkgs/build-support/cc-wrapper: stdenvNoCC, pname = targetPrefix +
  # "gcc-wrapper" (ccName without the target prefix), version = the
  # compiler's. cc_solib is getLib cc, plus /<target> for a cross compiler;
  # its -L lands in postFixup. The wrapper scripts are real: they give
  # every link the store's dynamic loader and RUNPATH, as ld-wrapper does.
  ccWrapper = { pname, version, stdenv, cc, bintools, libc ? null, shell }:
    let
      # Every cross-side wrapper here targets the host (build-platform tools
      # come without one), so target != host for all of them.
      cc_solib = "${cc.lib or cc}${if cross then "/${hostConfig}" else ""}";
      linkFlags = "-Wl,--dynamic-linker=${libc}/lib/ld-linux-aarch64.so.1 -Wl,--enable-new-dtags -Wl,-rpath,${libc}/lib";
      cxxFlags = "-L${cc_solib}/lib -Wl,-rpath,${cc_solib}/lib";
    in
    drv {
      name = "${pname}-${version}";
      inherit pname version stdenv cc bintools shell;
      libc_bin = if libc == null then "" else libc.bin or libc;
      libc_dev = if libc == null then "" else libc.dev or libc;
      libc_lib = if libc == null then "" else libc;
      propagatedBuildInputs = [ bintools ];
      postFixup = ''
        ${if libc == null then "" else ''echo "-B${libc}/lib/" >> $out/nix-support/libc-crt1-cflags''}
        ccLDFlags+=" -L${cc_solib}/lib"
        ccCFlags+=" -B${cc_solib}/lib"
      '';
      buildCommand = ''
        mkdir -p $out/bin $out/nix-support
        echo ${cc} > $out/nix-support/orig-cc
      '' + (if libc == null then "" else ''
        echo ${libc} > $out/nix-support/orig-libc
        printf '#!/bin/sh\nexec /usr/bin/aarch64-linux-gnu-gcc ${linkFlags} "$@"\n' > $out/bin/${targetPrefix}gcc
        printf '#!/bin/sh\nexec /usr/bin/aarch64-linux-gnu-g++ ${linkFlags} ${cxxFlags} "$@"\n' > $out/bin/${targetPrefix}g++
        chmod +x $out/bin/*
      '');
    };

  # A build-platform program: Debian's x86_64 binary, with its libraries
  # outside the store, like example/'s bash.
  debianTool = { pname, version, stdenv ? null, from, bin }:
    drv ({
      name = "${pname}-${version}";
      inherit pname version;
      buildCommand = ''
        mkdir -p $out/bin
        cp ${from} $out/bin/${bin}
      '';
    } // (if stdenv == null then { } else { inherit stdenv; }));

  ############################################################################
  # Native: the aarch64-linux bootstrap (pkgs/stdenv/linux/default.nix).
  # stage0 unpacks bootstrap-tools; stage-xgcc builds xgcc with the
  # bootstrap compiler; stage2 builds glibc with xgcc; stage3 builds the
  # final gcc; stage4 bash and the rest; stdenv-linux wraps it all.
  ############################################################################
  native = rec {
    bootstrap-tools = drv { name = "bootstrap-tools"; };
    stage0 = mkStdenv {
      name = "bootstrap-stage0-stdenv-linux";
      shell = "${bootstrap-tools}/bin/bash";
      initialPath = [ bootstrap-tools ];
    };
    glibc-bootstrapFiles = drv {
      name = "bootstrap-stage0-glibc-bootstrapFiles";
      stdenv = stage0;
      bootstrapTools = bootstrap-tools;
    };
    stage0-binutils-wrapper = bintoolsWrapper {
      pname = "bootstrap-stage0-binutils-wrapper";
      version = "";
      stdenv = stage0;
      bintools = bootstrap-tools;
      libc = glibc-bootstrapFiles;
      shell = "${bootstrap-tools}/bin/bash";
    };
    bootstrapStage = n: cc: libc: rec {
      wrapper = ccWrapper {
        pname = "bootstrap-stage${n}-gcc-wrapper";
        version = "";
        stdenv = stage0;
        inherit cc libc;
        bintools = stage0-binutils-wrapper;
        shell = "${bootstrap-tools}/bin/bash";
      };
      stdenv = mkStdenv {
        name = "bootstrap-stage${n}-stdenv-linux";
        cc = wrapper;
        shell = "${bootstrap-tools}/bin/bash";
        initialPath = [ bootstrap-tools ];
      };
    };
    stage1 = bootstrapStage "1" bootstrap-tools glibc-bootstrapFiles;
    stage-xgcc = bootstrapStage "-xgcc" bootstrap-tools glibc-bootstrapFiles;

    # pkgs/development/compilers/gcc/default.nix: outputs out, man, info,
    # lib; common/libgcc.nix adds libgcc (libgcc_s moved out of lib),
    # common/checksum.nix adds checksum (build = host = target only).
    xgcc = mkDerivation stage-xgcc.stdenv {
      pname = "xgcc";
      inherit version;
      outputs = [ "out" "man" "info" "lib" "libgcc" "checksum" ];
    };
    stage2 = bootstrapStage "2" xgcc glibc-bootstrapFiles;

    # Built against the bootstrap libc, kept for the final glibc.
    libunistring = mkDerivation stage2.stdenv {
      pname = "libunistring";
      version = "1.2";
      outputs = [ "out" "dev" "info" ];
    };
    libidn2 = mkDerivation stage2.stdenv {
      pname = "libidn2";
      version = "2.3.7";
      outputs = [ "bin" "dev" "out" "info" "devdoc" ];
      buildInputs = [ libunistring ];
    };

    # glibc/common.nix patches LIBIDN2_SONAME to a store path only when
    # build = host; default.nix appends the trusted dir to makeFlags, after
    # common.nix's OBJCOPY, BUILD_LDFLAGS and OBJDUMP (stdenv.cc.libc is
    # the bootstrap libc here).
    glibc = mkDerivation stage2.stdenv {
      pname = "glibc";
      version = "2.40";
      outputs = [ "out" "bin" "dev" "static" "getent" ];
      makeFlags = [
        "OBJCOPY=objcopy"
        "BUILD_LDFLAGS=-Wl,-rpath,${glibc-bootstrapFiles}/lib"
        "OBJDUMP=${bootstrap-tools}/bin/objdump"
        "user-defined-trusted-dirs=${xgcc.libgcc}/lib"
      ];
      postPatch = ''
        sed -i 's/ot \$/ot:\n\ttouch $@\n$/' manual/Makefile
        #define LIBIDN2_SONAME "${libidn2.out}/lib/libidn2.so.0"
      '';
      BASH_SHELL = "/bin/sh";
    };

    binutils = mkDerivation stage1.stdenv {
      pname = "binutils";
      version = "2.43.1";
      outputs = [ "out" "info" "man" ];
    };
    binutils-wrapper = bintoolsWrapper {
      pname = "binutils-wrapper";
      version = "2.43.1";
      stdenv = stage2.stdenv;
      bintools = binutils;
      libc = glibc;
      shell = "${bootstrap-tools}/bin/bash";
    };
    stage3 = rec {
      wrapper = ccWrapper {
        pname = "bootstrap-stage3-gcc-wrapper";
        version = "";
        stdenv = stage2.stdenv;
        cc = xgcc;
        bintools = binutils-wrapper;
        libc = glibc;
        shell = "${bootstrap-tools}/bin/bash";
      };
      stdenv = mkStdenv {
        name = "bootstrap-stage3-stdenv-linux";
        cc = wrapper;
        shell = "${bootstrap-tools}/bin/bash";
        initialPath = [ bootstrap-tools ];
      };
    };
    gcc = mkDerivation stage3.stdenv {
      pname = "gcc";
      inherit version;
      outputs = [ "out" "man" "info" "lib" "libgcc" "checksum" ];
      libc_dev = glibc.dev;
    };
    stage4 = rec {
      wrapper = ccWrapper {
        pname = "bootstrap-stage4-gcc-wrapper";
        inherit version;
        stdenv = stage3.stdenv;
        cc = gcc;
        bintools = binutils-wrapper;
        libc = glibc;
        shell = "${bootstrap-tools}/bin/bash";
      };
      stdenv = mkStdenv {
        name = "bootstrap-stage4-stdenv-linux";
        cc = wrapper;
        shell = "${bootstrap-tools}/bin/bash";
        initialPath = [ bootstrap-tools ];
      };
    };
    bash = mkDerivation stage4.stdenv {
      pname = "bash";
      version = "5.2p37";
      outputs = [ "out" "dev" "man" "doc" "info" ];
    };
    gcc-wrapper = ccWrapper {
      pname = "gcc-wrapper";
      inherit version;
      stdenv = stage4.stdenv;
      cc = gcc;
      bintools = binutils-wrapper;
      libc = glibc;
      shell = "${bash}/bin/bash";
    };
    stdenv = mkStdenv {
      name = "stdenv-linux";
      cc = gcc-wrapper;
      shell = "${bash}/bin/bash";
      initialPath = [ bash ];
    };
    # The same bash the stdenv runs: natively there is one.
    hostBash = bash;
    perl = mkDerivation stdenv { pname = "perl"; version = "5.40.0"; outputs = [ "out" "man" "devdoc" ]; };
    python3 = mkDerivation stdenv { pname = "python3"; version = "3.12.8"; };
    runtime = {
      inherit glibc bash;
      libgcc = xgcc.libgcc;
      gccLib = gcc.lib;
    };
  };

  ############################################################################
  # Cross: build platform x86_64 (no suffix), host aarch64.
  ############################################################################
  crossSet = rec {
    # Build-platform tools: x86_64 binaries. bash runs every builder.
    bash = debianTool { pname = "bash"; version = "5.2p37"; from = "/bin/bash"; bin = "bash"; };
    buildStdenv = mkStdenv {
      name = "stdenv-linux";
      shell = "${bash}/bin/bash";
      initialPath = [ bash ];
    };
    perl = debianTool { pname = "perl"; version = "5.40.0"; stdenv = buildStdenv; from = "/usr/bin/perl"; bin = "perl"; };
    python3 = debianTool { pname = "python3"; version = "3.12.8"; stdenv = buildStdenv; from = "/usr/bin/python3"; bin = "python3"; };

    binutils = drv {
      name = "${hostConfig}-binutils-2.43.1";
      pname = "${hostConfig}-binutils";
      version = "2.43.1";
      stdenv = buildStdenv;
      outputs = [ "out" "info" "man" ];
      buildCommand = ''
        mkdir -p $out/bin $info $man
        printf '#!/bin/sh\nexec /usr/bin/aarch64-linux-gnu-ld "$@"\n' > $out/bin/${hostConfig}-ld
        chmod +x $out/bin/${hostConfig}-ld
      '';
    };
    binutilsNoLibc = bintoolsWrapper {
      pname = "${hostConfig}-binutils-wrapper";
      version = "2.43.1";
      stdenv = buildStdenv;
      bintools = binutils;
      shell = "${bash}/bin/bash";
    };

    # gccWithoutTargetLibc: crossNameAddon = "<target>-nolibc-".
    gccNoLibc = drv {
      name = "${hostConfig}-nolibc-gcc-${version}";
      pname = "${hostConfig}-nolibc-gcc";
      inherit version;
      stdenv = buildStdenv;
      outputs = [ "out" "man" "info" "lib" ];
      targetConfig = hostConfig;
      withoutTargetLibc = true;
      buildCommand = mkOutputs [ "out" "man" "info" "lib" ];
    };
    gccNoLibcWrapper = ccWrapper {
      pname = "${hostConfig}-nolibc-gcc-wrapper";
      inherit version;
      stdenv = buildStdenv;
      cc = gccNoLibc;
      bintools = binutilsNoLibc;
      shell = "${bash}/bin/bash";
    };
    # gccCrossLibcStdenv: builds glibc and the standalone libgcc.
    libcStdenv = mkStdenv {
      name = "stdenv-linux";
      cc = gccNoLibcWrapper;
      shell = "${bash}/bin/bash";
      initialPath = [ bash ];
      isCross = true;
    };

    # glibcCross.override { libgcc = null; }: what libgcc is built against.
    glibc-nolibgcc = mkDerivation libcStdenv {
      pname = "glibc-nolibgcc";
      version = "2.40";
      outputs = [ "out" "bin" "dev" "static" "getent" ];
      makeFlags = [ "OBJCOPY=${hostConfig}-objcopy" ];
      nativeBuildInputs = [ python3 ];
    };

    # pkgs/development/libraries/gcc/libgcc: pname libgcc, outputs out and
    # dev; postInstall links lib/gcc/<host>/<version>/* into $out/lib.
    libgcc = mkDerivation libcStdenv {
      pname = "libgcc";
      inherit version;
      outputs = [ "out" "dev" ];
      buildInputs = [ glibc-nolibgcc.dev ];
      configureFlags = [ "cross_compiling=true" "--disable-gcov" "--with-glibc-version=2.40" ];
      preConfigure = ''"--with-headers=${glibc-nolibgcc.dev}/include"'';
      buildCommand = ''
        mkdir -p $out/lib/gcc/${hostConfig}/${version} $dev/include
        cp -L ${debLib}/libgcc_s.so.1 $out/lib/gcc/${hostConfig}/${version}/
        ln -s $out/lib/gcc/${hostConfig}/${version}/libgcc_s.so.1 $out/lib/
      '';
    };

    # The trusted dir glibc compiles in: here libc.so.6's RUNPATH, which is
    # where glibc's dlopen of libgcc_s.so.1 (pthread_exit, pthread_cancel)
    # looks as well.
    glibc = mkDerivation libcStdenv {
      pname = "glibc";
      version = "2.40";
      outputs = [ "out" "bin" "dev" "static" "getent" ];
      makeFlags = [
        "OBJCOPY=${hostConfig}-objcopy"
        "user-defined-trusted-dirs=${libgcc}/lib"
      ];
      postPatch = ''
        sed -i 's/ot \$/ot:\n\ttouch $@\n$/' manual/Makefile
      '';
      BASH_SHELL = "/bin/sh";
      nativeBuildInputs = [ python3 ];
      buildCommand = ''
        mkdir -p $out/lib $bin/bin $dev/include $static/lib $getent/bin
        cp -L ${debLib}/ld-linux-aarch64.so.1 ${debLib}/libc.so.6 ${debLib}/libm.so.6 $out/lib/
        chmod u+w $out/lib/*
        patchelf --set-rpath ${libgcc}/lib $out/lib/libc.so.6
      '';
    };

    # The cross compiler runs on the build platform: no host suffix, the
    # target prefix instead. Its target libraries sit in lib/<target>/lib
    # (cc_solib); libgcc_s stays there, as the target libc has a libgcc.
    gcc = drv {
      name = "${hostConfig}-gcc-${version}";
      pname = "${hostConfig}-gcc";
      inherit version;
      stdenv = buildStdenv;
      outputs = [ "out" "man" "info" "lib" ];
      targetConfig = hostConfig;
      libcCross = glibc;
      buildCommand = ''
        mkdir -p $out/bin $man $info $lib/${hostConfig}/lib
        printf '#!/bin/sh\nexec /usr/bin/aarch64-linux-gnu-gcc "$@"\n' > $out/bin/${hostConfig}-gcc
        chmod +x $out/bin/${hostConfig}-gcc
        cp -L ${debLib}/libstdc++.so.6 ${debLib}/libgcc_s.so.1 $lib/${hostConfig}/lib/
        chmod u+w $lib/${hostConfig}/lib/*
        patchelf --set-rpath $lib/${hostConfig}/lib:${glibc}/lib $lib/${hostConfig}/lib/libstdc++.so.6
      '';
    };
    binutils-wrapper = bintoolsWrapper {
      pname = "${hostConfig}-binutils-wrapper";
      version = "2.43.1";
      stdenv = buildStdenv;
      bintools = binutils;
      libc = glibc;
      shell = "${bash}/bin/bash";
    };
    gcc-wrapper = ccWrapper {
      pname = "${hostConfig}-gcc-wrapper";
      inherit version;
      stdenv = buildStdenv;
      cc = gcc;
      bintools = binutils-wrapper;
      libc = glibc;
      shell = "${bash}/bin/bash";
    };
    stdenv = mkStdenv {
      name = "stdenv-linux";
      cc = gcc-wrapper;
      shell = "${bash}/bin/bash";
      initialPath = [ bash ];
      isCross = true;
    };
    hostBash = mkDerivation stdenv {
      pname = "bash";
      version = "5.2p37";
      outputs = [ "out" "dev" "man" "doc" "info" ];
      src = ./src/bash.c;
      buildCommand = ''
        ${mkOutputs [ "dev" "man" "doc" "info" ]}
        mkdir -p $out/bin
        cp $src bash.c
        $CC -O2 -o $out/bin/bash bash.c
        ln -s bash $out/bin/sh
      '';
    };
    runtime = {
      inherit glibc libgcc;
      bash = hostBash;
      gccLib = gcc.lib;
    };
  };

  set = if cross then crossSet else native;

  # The programs, the same expressions on both sides. Only the stdenv and
  # the build-platform inputs differ, as in nixpkgs.
  hello = mkDerivation set.stdenv {
    pname = "hello";
    version = "2.12.1";
    src = ./src/hello.c;
    nativeBuildInputs = [ set.perl ];
    buildCommand = ''
      mkdir -p $out/bin
      cp $src hello.c
      $CC -O2 -pthread -o $out/bin/hello hello.c
    '';
  };
  hello-cxx = mkDerivation set.stdenv {
    pname = "hello-cxx";
    version = "1.0";
    src = ./src/hello-cxx.cc;
    nativeBuildInputs = [ set.python3 ];
    buildCommand = ''
      mkdir -p $out/bin
      cp $src hello-cxx.cc
      $CXX -O2 -o $out/bin/hello-cxx hello-cxx.cc
    '';
  };
  # patch-shebangs.sh patches out's shebangs from HOST_PATH: the host
  # inputs (buildInputs), plus, without strictDeps (native builds), the
  # stdenv's initialPath. With bash in buildInputs both sides name a host
  # bash: bash-5.2p37 natively, bash-aarch64-unknown-linux-gnu-5.2p37
  # cross. (Without it, a cross `#!/bin/sh` would stay /bin/sh.)
  hello-scripts = mkDerivation set.stdenv {
    pname = "hello-scripts";
    version = "1.0";
    buildInputs = [ set.hostBash ];
    buildCommand = ''
      mkdir -p $out/bin
      cat > $out/bin/hello-again <<EOF
      #!${set.hostBash}/bin/bash
      exec ${hello}/bin/hello "\$@"
      EOF
      chmod +x $out/bin/hello-again
    '';
  };

  # No bash among its inputs: natively HOST_PATH still holds the stdenv's
  # initialPath, so `#!/bin/sh` becomes the stdenv's bash; cross (strictDeps)
  # HOST_PATH is empty and /bin/sh stays.
  hello-sh = mkDerivation set.stdenv {
    pname = "hello-sh";
    version = "1.0";
    buildCommand = ''
      mkdir -p $out/bin
      cat > $out/bin/hello-sh <<EOF
      #!${if cross then "/bin/sh" else "${set.bash}/bin/sh"}
      exec ${hello}/bin/hello "\$@"
      EOF
      chmod +x $out/bin/hello-sh
    '';
  };

  roots = { inherit hello hello-cxx hello-scripts hello-sh; };
in
{
  inherit roots;
  # The runtime roles the mapping pairs, beside the roots: which output of
  # which derivation holds glibc, libgcc_s, libstdc++ and the host bash.
  runtime = set.runtime;
  # Everything, for nix-instantiate and GC roots.
  all = roots // builtins.removeAttrs set [ "runtime" "bootstrapStage" "stage1" "stage-xgcc" "stage2" "stage3" "stage4" ];
}
