# kvscope_add_plugin(<name> SOURCES <file>... [LIBRARIES <lib>...])
#
# A KVScope plugin: a MODULE library (lib<name>.so) compiled against KVScope::sdk with
# every symbol hidden except the entry point, which the SDK header marks KVS_EXPORT.
# Hidden symbols keep two plugins (or a plugin and kvscope) from binding to each other's
# functions, and make the library's one way in the kvscope_plugin() descriptor.
#
# LIBRARIES are linked privately. A plugin that computes with libtorch does
# find_package(Torch) itself, passes ${TORCH_LIBRARIES} here and uses
# plugins/sdk/kvscope_plugin_aten.h; the C ABI needs nothing but the SDK.
include_guard(GLOBAL)

function(kvscope_add_plugin name)
  cmake_parse_arguments(PARSE_ARGV 1 KVS_PLUGIN "" "" "SOURCES;LIBRARIES")
  if(NOT KVS_PLUGIN_SOURCES)
    message(FATAL_ERROR "kvscope_add_plugin(${name}): give its sources with SOURCES")
  endif()
  if(KVS_PLUGIN_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "kvscope_add_plugin(${name}): unknown arguments ${KVS_PLUGIN_UNPARSED_ARGUMENTS}")
  endif()
  add_library(${name} MODULE ${KVS_PLUGIN_SOURCES})
  target_link_libraries(${name} PRIVATE KVScope::sdk ${KVS_PLUGIN_LIBRARIES})
  set_target_properties(${name} PROPERTIES
    C_VISIBILITY_PRESET hidden
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON)
endfunction()
