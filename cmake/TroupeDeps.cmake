# Finds every dependency named in DESIGN.md. A missing one stops configure with the
# Debian package that provides it, so a fresh machine knows what to install.

function(troupe_missing what package)
  message(FATAL_ERROR "Troupe: ${what} not found. Install it with: apt-get install ${package}  (or run scripts/setup.sh)")
endfunction()

find_package(Threads REQUIRED)
find_package(OpenMP)
if(NOT OpenMP_CXX_FOUND)
  troupe_missing("OpenMP" "libgomp1 (g++)")
endif()

# OpenBLAS (CPU GEMM)
find_path(OPENBLAS_INCLUDE_DIR cblas.h PATHS /usr/include/x86_64-linux-gnu/openblas-pthread /usr/include/openblas /usr/include)
find_library(OPENBLAS_LIBRARY NAMES openblas PATHS /usr/lib/x86_64-linux-gnu/openblas-pthread)
if(NOT OPENBLAS_INCLUDE_DIR OR NOT OPENBLAS_LIBRARY)
  troupe_missing("OpenBLAS" "libopenblas-dev")
endif()
add_library(troupe::openblas INTERFACE IMPORTED)
target_include_directories(troupe::openblas SYSTEM INTERFACE ${OPENBLAS_INCLUDE_DIR})
target_link_libraries(troupe::openblas INTERFACE ${OPENBLAS_LIBRARY})

# Actors and transport only (TROUPE_KERNELS_ONLY builds core and ops alone).
if(NOT TROUPE_KERNELS_ONLY)
  # CAF 0.17 ships no CMake config: find the libraries by hand.
  find_path(CAF_INCLUDE_DIR caf/all.hpp)
  find_library(CAF_CORE_LIBRARY caf_core)
  find_library(CAF_IO_LIBRARY caf_io)
  if(NOT CAF_INCLUDE_DIR OR NOT CAF_CORE_LIBRARY OR NOT CAF_IO_LIBRARY)
    troupe_missing("CAF (C++ Actor Framework 0.17)" "libcaf-dev")
  endif()
  add_library(troupe::caf INTERFACE IMPORTED)
  target_include_directories(troupe::caf SYSTEM INTERFACE ${CAF_INCLUDE_DIR})
  target_link_libraries(troupe::caf INTERFACE ${CAF_IO_LIBRARY} ${CAF_CORE_LIBRARY} Threads::Threads)

  find_package(ucx CONFIG QUIET)
  if(NOT ucx_FOUND)
    troupe_missing("UCX" "libucx-dev")
  endif()

  find_package(CapnProto CONFIG QUIET)
  if(NOT CapnProto_FOUND)
    troupe_missing("Cap'n Proto" "libcapnp-dev capnproto")
  endif()
endif()

find_package(spdlog CONFIG QUIET)
if(NOT spdlog_FOUND)
  troupe_missing("spdlog" "libspdlog-dev")
endif()

find_package(tomlplusplus CONFIG QUIET)
if(NOT tomlplusplus_FOUND)
  troupe_missing("toml++" "libtomlplusplus-dev")
endif()

find_package(nlohmann_json CONFIG QUIET)
if(NOT nlohmann_json_FOUND)
  troupe_missing("nlohmann JSON" "nlohmann-json3-dev")
endif()

if(NOT TROUPE_KERNELS_ONLY)  # serving and the console (apps/)
  # Debian's cpp-httplib is a compiled library, built with OpenSSL, zlib and brotli: the
  # header must see the same CPPHTTPLIB_* defines (they change class layouts), so take
  # them and the library from its pkg-config file.
  find_package(PkgConfig QUIET)
  if(PkgConfig_FOUND)
    pkg_check_modules(HTTPLIB QUIET IMPORTED_TARGET cpp-httplib)
  endif()
  if(NOT HTTPLIB_FOUND)
    troupe_missing("cpp-httplib" "libcpp-httplib-dev pkg-config")
  endif()
  add_library(troupe::httplib INTERFACE IMPORTED)
  target_link_libraries(troupe::httplib INTERFACE PkgConfig::HTTPLIB)

  find_path(READLINE_INCLUDE_DIR readline/readline.h)
  find_library(READLINE_LIBRARY readline)
  if(NOT READLINE_INCLUDE_DIR OR NOT READLINE_LIBRARY)
    troupe_missing("GNU readline" "libreadline-dev")
  endif()
  add_library(troupe::readline INTERFACE IMPORTED)
  target_include_directories(troupe::readline SYSTEM INTERFACE ${READLINE_INCLUDE_DIR})
  target_link_libraries(troupe::readline INTERFACE ${READLINE_LIBRARY})
endif()

find_package(ZLIB QUIET)
if(NOT ZLIB_FOUND)
  troupe_missing("zlib" "zlib1g-dev")
endif()

if(BUILD_TESTING OR NOT DEFINED BUILD_TESTING)
  find_package(Catch2 2 CONFIG QUIET)
  if(NOT Catch2_FOUND)
    troupe_missing("Catch2 v2" "catch2")
  endif()
endif()

if(TROUPE_CUDA)
  if(NOT CMAKE_CUDA_COMPILER)
    set(CMAKE_CUDA_COMPILER ${TROUPE_NVCC})
  endif()
  # Before enable_language, which would otherwise set nvcc's own default (75 for CUDA 13).
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 80 90 CACHE STRING "GPU architectures to build for (A100, H100)")
  endif()
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
  find_library(NCCL_LIBRARY nccl PATHS ${CUDAToolkit_LIBRARY_DIR} /usr/local/cuda/lib64)
  find_path(NCCL_INCLUDE_DIR nccl.h PATHS ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda/include)
  if(NOT NCCL_LIBRARY OR NOT NCCL_INCLUDE_DIR)
    message(FATAL_ERROR "Troupe: TROUPE_CUDA is on but NCCL was not found; install libnccl-dev or configure with -DTROUPE_CUDA=OFF")
  endif()
  add_library(troupe::nccl INTERFACE IMPORTED)
  target_include_directories(troupe::nccl SYSTEM INTERFACE ${NCCL_INCLUDE_DIR})
  target_link_libraries(troupe::nccl INTERFACE ${NCCL_LIBRARY})
endif()

message(STATUS "Troupe: CUDA backend ${TROUPE_CUDA}; sanitizers '${TROUPE_SANITIZE}'")
