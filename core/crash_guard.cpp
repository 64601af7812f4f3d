#include "core/crash_guard.h"

#include <algorithm>
#include <csetjmp>
#include <csignal>
#include <cstdio>
#include <memory>
#include <mutex>

namespace kvscope {

namespace {

constexpr int kSignals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
struct sigaction g_previous[NSIG]; // what each signal did before install()

// The innermost guarded call on this thread (null outside one) and the fault it took.
// Plain thread_locals of the executable: reading them in a signal handler is safe.
thread_local sigjmp_buf* t_jump = nullptr;
thread_local Crash t_crash;

void pass_on(int sig, siginfo_t* info, void* context) {
    const struct sigaction& prev = g_previous[sig];
    if (prev.sa_flags & SA_SIGINFO) return prev.sa_sigaction(sig, info, context);
    if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN) return prev.sa_handler(sig);
    // The default action: the raise waits on the signal's mask until we return, and a
    // hardware fault would anyway repeat at the same instruction.
    std::signal(sig, SIG_DFL);
    std::raise(sig);
}

void on_fault(int sig, siginfo_t* info, void* context) {
    sigjmp_buf* jump = t_jump;
    if (!jump) return pass_on(sig, info, context);
    t_jump = nullptr; // a second fault on the way out is not ours
    t_crash.signal = sig;
    t_crash.address = sig == SIGSEGV || sig == SIGBUS ? info->si_addr : nullptr;
    siglongjmp(*jump, 1);
}

void install() {
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction act {};
        act.sa_sigaction = on_fault;
        act.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&act.sa_mask);
        for (int sig : kSignals) sigaction(sig, &act, &g_previous[sig]);
    });
}

// A stack of its own for the handler on this thread, so that a plugin's runaway recursion
// (a fault on the guard page, with no stack left) is caught too. A thread that already
// has one (ASan gives each thread one) keeps it.
struct SignalStack {
    std::unique_ptr<char[]> memory;
    SignalStack() {
        stack_t current{};
        if (sigaltstack(nullptr, &current) == 0 && !(current.ss_flags & SS_DISABLE)) return;
        const size_t size = std::max<size_t>(SIGSTKSZ, 64 * 1024);
        memory.reset(new char[size]);
        stack_t s{};
        s.ss_sp = memory.get();
        s.ss_size = size;
        sigaltstack(&s, nullptr);
    }
    ~SignalStack() {
        if (!memory) return;
        stack_t off{};
        off.ss_flags = SS_DISABLE;
        sigaltstack(&off, nullptr);
    }
};

} // namespace

std::string describe(const Crash& crash) {
    const char* what = "a fault";
    switch (crash.signal) {
    case SIGSEGV: what = "SIGSEGV, a bad memory access"; break;
    case SIGBUS: what = "SIGBUS, an unmapped or misaligned memory access"; break;
    case SIGFPE: what = "SIGFPE, an arithmetic fault such as an integer division by zero"; break;
    case SIGILL: what = "SIGILL, an illegal instruction (a compiler trap for undefined behaviour, often)"; break;
    case SIGABRT: what = "SIGABRT, abort() (a failed assert, often)"; break;
    }
    std::string text = what;
    if (crash.signal == SIGSEGV || crash.signal == SIGBUS) {
        char at[32];
        std::snprintf(at, sizeof at, " at address 0x%zx", size_t(crash.address));
        text += at;
    }
    return text;
}

std::optional<Crash> guarded_call(void (*fn)(void*), void* context) {
    install();
    thread_local SignalStack stack;
    sigjmp_buf jump;
    sigjmp_buf* const outer = t_jump;
    // sigsetjmp saves the signal mask, so the jump back also unblocks the signal.
    if (sigsetjmp(jump, 1) != 0) {
        t_jump = outer;
        return t_crash;
    }
    t_jump = &jump;
    try {
        fn(context);
    } catch (...) {
        t_jump = outer;
        throw;
    }
    t_jump = outer;
    return std::nullopt;
}

} // namespace kvscope
