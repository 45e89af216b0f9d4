#define _POSIX_C_SOURCE 200809L
#include "process.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop_signal;

static void on_stop(int sig)
{
    stop_signal = sig;
}

pid_t ce_fork(void)
{
    return fork();
}

int ce_wait(pid_t pid, int nohang, ce_child_status *st)
{
    int status = 0;
    pid_t got;
    memset(st, 0, sizeof *st);
    do {
        got = waitpid(pid, &status, nohang ? WNOHANG : 0);
    } while (got < 0 && !nohang && errno == EINTR);
    if (got < 0) return -1;
    st->pid = got;
    if (got > 0) {
        st->exited = WIFEXITED(status);
        st->code = st->exited ? WEXITSTATUS(status) : WTERMSIG(status);
    }
    return 0;
}

int ce_kill(pid_t pid, int sig)
{
    return kill(pid, sig);
}

int ce_trap_stop_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) < 0) return -1;
    return sigaction(SIGINT, &sa, NULL);
}

int ce_stop_signal(void)
{
    return stop_signal;
}

void ce_clear_stop_signal(void)
{
    stop_signal = 0;
}

void ce_default_stop_signals(void)
{
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    stop_signal = 0;
}

double ce_time(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int ce_hostname(char *buf, unsigned long len)
{
    if (gethostname(buf, len) < 0) return -1;
    buf[len - 1] = '\0';
    return 0;
}
