// Runs plugin code so that a hardware fault in it ends the call, not the process.
//
// A plugin is someone else's native code running inside the workbench: a bad pointer or a
// division by zero in its hook would otherwise take the GUI down with every unsaved view.
// guarded() catches SIGSEGV, SIGBUS, SIGFPE, SIGILL and SIGABRT raised on the calling
// thread while the call runs (a stack overflow too: the handler runs on its own stack),
// and jumps back out of the plugin. What the plugin was doing is abandoned where it stood:
// its destructors do not run and a lock it held stays held, so the host must not call
// into that plugin again (PluginRegistry marks it crashed until it is reloaded). Faults on
// other threads, and faults outside a guarded call, keep their usual handling (the
// handler passes them on to whatever was installed before, e.g. ASan's).
#pragma once

#include <optional>
#include <string>

namespace kvscope {

struct Crash {
    int signal = 0;
    const void* address = nullptr; // the faulting address, for SIGSEGV and SIGBUS
};

// "SIGSEGV, a bad memory access at address 0x10"
std::string describe(const Crash& crash);

// Calls fn(context); a fault during the call returns what it was.
std::optional<Crash> guarded_call(void (*fn)(void*), void* context);

template <class F> std::optional<Crash> guarded(F& f) {
    return guarded_call([](void* p) { (*static_cast<F*>(p))(); }, &f);
}

} // namespace kvscope
