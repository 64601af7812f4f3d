# Writes OUT (build_version.cpp) with "<VERSION> (<git describe>)", touching it only when
# the text changes, so an unchanged tree rebuilds nothing. Run at every build by the
# kvscope_build_version target (sessions/CMakeLists.txt).
execute_process(COMMAND git describe --always --dirty WORKING_DIRECTORY ${SOURCE_DIR}
                OUTPUT_VARIABLE describe OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE failed)
if(failed OR describe STREQUAL "")
  set(describe "not a git checkout")
endif()
set(text "#include \"sessions/build_version.h\"\n\nconst char* kvscope::kvscope_build_version() { return \"${VERSION} (${describe})\"; }\n")
if(EXISTS ${OUT})
  file(READ ${OUT} old)
endif()
if(NOT old STREQUAL text)
  file(WRITE ${OUT} "${text}")
endif()
