# The CUDA backend and the NCCL collective (-DUNEVEN_CUDA=ON): library uneven_cuda, linked into uneven_core,
# and the GPU tests tests/cuda/*_test.cpp (label gpu; they skip without a GPU). Included right after uneven_core.
option(UNEVEN_CUDA "Build the CUDA backend and NCCL collective" OFF)
if(NOT UNEVEN_CUDA)
  return()
endif()

if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES 90)  # H200 (sm_90)
endif()
if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
  set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
endif()
enable_language(CUDA)
# CMake 3.25 does not know nvcc's C++20 flag (CUDA20 dialects need CMake 3.26+): tell it.
if(NOT CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
  set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
endif()
find_package(CUDAToolkit REQUIRED)
find_library(NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} REQUIRED)
find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} REQUIRED)

# The optimisation level is the target's -O3 below, not the configuration's -O2 (nvcc warns on both).
foreach(config RELWITHDEBINFO RELEASE MINSIZEREL)
  string(REGEX REPLACE "-O[0-9s]" "" CMAKE_CUDA_FLAGS_${config} "${CMAKE_CUDA_FLAGS_${config}}")
endforeach()

# Only these sources: they use headers of uneven_core (compute/, model/dtype.h, quant/blocks.h,
# util/error.h, comm/collective.h) but no symbol defined in its .cpp files, so the link is not circular.
file(GLOB UNEVEN_CUDA_SOURCES CONFIGURE_DEPENDS src/compute/cuda/*.cu src/comm/nccl_collective.cu)
add_library(uneven_cuda STATIC ${UNEVEN_CUDA_SOURCES})
target_include_directories(uneven_cuda PUBLIC src)
target_include_directories(uneven_cuda PRIVATE ${NCCL_INCLUDE_DIR})
set_target_properties(uneven_cuda PROPERTIES CUDA_STANDARD 20 CUDA_STANDARD_REQUIRED ON CUDA_EXTENSIONS OFF)
# -O3 and IEEE fp32 (no --use_fast_math: results are compared with the CPU's to 1e-5). fmt 9 keeps its
# constexpr machinery off under nvcc, which breaks its consteval format strings: turn it back on.
target_compile_options(uneven_cuda PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-O3 -lineinfo>)
target_compile_definitions(uneven_cuda PRIVATE FMT_USE_CONSTEXPR=1)
target_link_libraries(uneven_cuda PUBLIC CUDA::cudart CUDA::cublas CUDA::cublasLt ${NCCL_LIBRARY} fmt::fmt)

target_link_libraries(uneven_core PUBLIC uneven_cuda)
target_compile_definitions(uneven_core PUBLIC UNEVEN_HAS_CUDA=1)

enable_testing()
include(GoogleTest)
# GPU tests: every tests/cuda/*_test.cpp (they skip without a GPU).
file(GLOB UNEVEN_CUDA_TEST_SOURCES CONFIGURE_DEPENDS tests/cuda/*_test.cpp)
foreach(test_src ${UNEVEN_CUDA_TEST_SOURCES})
  get_filename_component(test_name ${test_src} NAME_WE)
  add_executable(${test_name} ${test_src})
  target_include_directories(${test_name} PRIVATE tests)
  target_link_libraries(${test_name} PRIVATE uneven_core GTest::gtest GTest::gtest_main)
  target_compile_definitions(${test_name} PRIVATE UNEVEN_SOURCE_DIR="${CMAKE_SOURCE_DIR}"
                             UNEVEN_BINARY="$<TARGET_FILE:uneven>")
  # No add_dependencies on `uneven`: CI compiles these objects alone, and a GPU build builds everything.
  gtest_discover_tests(${test_name} DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 600 LABELS gpu)
endforeach()

# GPU benches: every bench/cuda/*.cpp is a program.
file(GLOB UNEVEN_CUDA_BENCH_SOURCES CONFIGURE_DEPENDS bench/cuda/*.cpp)
foreach(bench_src ${UNEVEN_CUDA_BENCH_SOURCES})
  get_filename_component(bench_name ${bench_src} NAME_WE)
  add_executable(${bench_name} ${bench_src})
  target_link_libraries(${bench_name} PRIVATE uneven_core)
endforeach()
