/* Ctrl-C and SIGTERM for the whole program, received by one watcher thread.
 *
 * Why not a plain signal handler: the kernel runs a handler on the stack of whichever thread the
 * signal lands on, below that thread's stack pointer. oneDNN's JIT GEMM kernels (Debian
 * libdnnl 2.6) keep data below the stack pointer beyond the 128-byte red zone, so a handler
 * that interrupted one of them overwrote its data and the process later aborted in free()
 * ("corrupted double-linked list"; 9 of 12 Ctrl-C tries during toy-mlp training, none with
 * OpenBLAS alone). Here SIGINT and SIGTERM are blocked in every thread (the mask is set
 * in main() before any OpenMP or oneDNN thread exists, and threads inherit it), and one
 * thread takes them with sigwait(): no signal frame is ever pushed onto a computing thread.
 *
 * While a training loop has registered a flag (cli_signals_catch), a signal only sets it and
 * the loop saves a checkpoint and stops; otherwise the signal gets its default action
 * (the process ends, as an unhandled Ctrl-C does). */
#include <pthread.h>
#include <signal.h>
#include <stddef.h>

#include "cli.h"

static volatile sig_atomic_t *g_flag; /* read and written with __atomic builtins */
static sigset_t g_set;

static void *watcher(void *arg)
{
    (void)arg;
    for (;;) {
        int sig = 0;
        if (sigwait(&g_set, &sig)) continue;
        volatile sig_atomic_t *f = __atomic_load_n(&g_flag, __ATOMIC_SEQ_CST);
        if (f) {
            __atomic_store_n(f, sig, __ATOMIC_SEQ_CST);
            continue;
        }
        /* nobody stops gracefully: the default action, as without this thread */
        sigset_t one;
        sigemptyset(&one);
        sigaddset(&one, sig);
        signal(sig, SIG_DFL);
        pthread_sigmask(SIG_UNBLOCK, &one, NULL);
        raise(sig);
    }
    return NULL;
}

int cli_signals_init(void)
{
    static int started;
    if (started) return 0;
    started = 1;
    sigemptyset(&g_set);
    sigaddset(&g_set, SIGINT);
    sigaddset(&g_set, SIGTERM);
    if (pthread_sigmask(SIG_BLOCK, &g_set, NULL)) return -1;
    pthread_attr_t at;
    pthread_t th;
    int ok = pthread_attr_init(&at) == 0;
    ok = ok && pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED) == 0;
    ok = ok && pthread_create(&th, &at, watcher, NULL) == 0;
    pthread_attr_destroy(&at);
    if (!ok) { /* no watcher: leave the signals at their default action */
        pthread_sigmask(SIG_UNBLOCK, &g_set, NULL);
        return -1;
    }
    return 0;
}

void cli_signals_catch(volatile sig_atomic_t *flag)
{
    if (flag) *flag = 0;
    __atomic_store_n(&g_flag, flag, __ATOMIC_SEQ_CST);
}
