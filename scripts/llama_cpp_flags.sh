#!/usr/bin/env bash
# The one place that decides how llama-cpp-python (lab 10's GGUF quantizer and engine) is compiled.
# Prints the CMAKE_ARGS for this machine's architecture (or the one given: x86_64 | aarch64).
#
# Why explicit flags: llama.cpp's default is GGML_NATIVE=ON (-march=native). A wheel built that way
# uses every instruction of the build machine's CPU (AVX-512, AMX, ...) and dies with SIGILL or a
# general protection fault on the next machine, and pip caches that wheel. So we never build native:
#   x86_64  : the AVX2 level (AVX, AVX2, FMA, F16C, BMI2), which every x86-64 CPU since 2015 has;
#             no AVX-512, no AMX.
#   aarch64 : -march=armv8.2-a+dotprod+fp16, the level of llama.cpp's own "armv8.2_2" CPU variant
#             (ggml/src/CMakeLists.txt, GGML_CPU_ALL_VARIANTS), which every Neoverse N1/V1/V2 core
#             and the DGX Spark's Cortex-X925/A725 cores implement.
# LLAVA_BUILD=OFF skips the multimodal library, which the labs do not use (llama_cpp imports it lazily).
#
# Opt in to a build for this machine's own CPU (faster, never portable; the wheel is cached apart):
#   LABS_LLAMA_NATIVE=1 bash scripts/setup.sh
set -euo pipefail
arch=${1:-$(uname -m)}
common="-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
if [ "${LABS_LLAMA_NATIVE:-0}" = "1" ]; then
  echo "$common -DGGML_NATIVE=ON"
  exit 0
fi
case "$arch" in
  x86_64|amd64)
    echo "$common -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON" \
         "-DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF" \
         "-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" ;;
  aarch64|arm64)
    echo "$common -DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16" ;;
  *)
    echo "llama_cpp_flags.sh: no portable flag set for architecture '$arch'; set LABS_LLAMA_NATIVE=1 to build for this CPU only" >&2
    exit 2 ;;
esac
