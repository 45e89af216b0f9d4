/* The few POSIX process calls a worker pool needs (Lua 5.4 on Debian has no lua-posix):
 * fork, wait, kill, and SIGTERM/SIGINT turned into a flag that a worker loop polls. */
#ifndef CELERS_PROCESS_H
#define CELERS_PROCESS_H

#include <sys/types.h>

/* Outcome of a child that has ended. */
typedef struct ce_child_status {
    pid_t pid;  /* 0 when none ended (non-blocking wait) */
    int exited; /* 1: exited with code; 0: killed by signal */
    int code;   /* exit code or signal number */
} ce_child_status;

pid_t ce_fork(void);
/* pid -1 waits for any child. Returns -1 with errno on failure (ECHILD: none left). */
int ce_wait(pid_t pid, int nohang, ce_child_status *st);
int ce_kill(pid_t pid, int sig);
/* Install handlers for SIGTERM and SIGINT that only record the signal. */
int ce_trap_stop_signals(void);
/* The last trapped signal (0 when none) and clearing it. */
int ce_stop_signal(void);
void ce_clear_stop_signal(void);
/* Restore default dispositions (for a freshly forked child that wants its own). */
void ce_default_stop_signals(void);
/* Seconds since the epoch, with sub-second precision. */
double ce_time(void);
int ce_hostname(char *buf, unsigned long len);

#endif
