# The plugin SDK as an outside author gets it (ctest test_install_sdk, label install):
# install the build tree's sdk component into a scratch prefix, build the example plugin
# against that prefix only, and check that kvscope loads it and lists its method.
#   cmake -DBUILD_DIR= -DSOURCE_DIR= -DSCRATCH= -DKVSCOPE_EXE= -DGENERATOR= -DMAKE_PROGRAM=
#         -DC_COMPILER= -P test_install_sdk.cmake
cmake_minimum_required(VERSION 3.22)

function(step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc}):\n${ARGN}\n${out}")
  endif()
  set(output "${out}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE ${SCRATCH})
set(prefix ${SCRATCH}/prefix)
set(example ${SOURCE_DIR}/plugins/examples/recency_decay)

step("install" ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix} --component sdk)
foreach(file include/kvscope/plugins/sdk/kvscope_plugin.h include/kvscope/plugins/sdk/kvscope_plugin_aten.h)
  if(NOT EXISTS ${prefix}/${file})
    message(FATAL_ERROR "install did not make ${prefix}/${file}")
  endif()
endforeach()

step("configuring the example" ${CMAKE_COMMAND} -S ${example} -B ${SCRATCH}/build -G ${GENERATOR}
     -DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM} -DCMAKE_C_COMPILER=${C_COMPILER} -DCMAKE_PREFIX_PATH=${prefix})
file(STRINGS ${SCRATCH}/build/CMakeCache.txt found REGEX "^KVScope_DIR:")
if(NOT found MATCHES "${prefix}/")
  message(FATAL_ERROR "the example found another KVScope: ${found}")
endif()
step("building the example" ${CMAKE_COMMAND} --build ${SCRATCH}/build)

set(plugin ${SCRATCH}/build/librecency_decay.so)
step("kvscope methods --plugin" ${KVSCOPE_EXE} methods --plugin ${plugin})
if(NOT output MATCHES "decayed_attention +scorer" OR NOT output MATCHES "from ${plugin}")
  message(FATAL_ERROR "kvscope methods --plugin ${plugin} does not list decayed_attention:\n${output}")
endif()
message(STATUS "built ${plugin} against ${prefix}; kvscope lists decayed_attention")
