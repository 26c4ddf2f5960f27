/* spawn: runs a command and reports its wall time and peak RSS, like /usr/bin/time, but
 * with nanosecond CLOCK_MONOTONIC stamps and no output parsing.
 *
 *   spawn OUTFILE COMMAND [ARG]...
 *
 * Writes "T0_NS T1_NS MAXRSS_KB EXIT\n" to OUTFILE: T0 just before fork, T1 just after the
 * command is reaped (wait4), its ru_maxrss, and its exit code (128+N if killed by signal N).
 * Being a small process, it keeps the command's ru_maxrss honest: exec() records the old
 * image's RSS high-water mark, so a command forked straight from the Python harness would
 * be charged the harness's ~20 MB.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: spawn OUTFILE COMMAND [ARG]...\n");
        return 2;
    }
    FILE *out = fopen(argv[1], "w");
    if (!out) {
        perror(argv[1]);
        return 2;
    }
    long long t0 = now();
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 2;
    }
    if (pid == 0) {
        fclose(out);
        execvp(argv[2], argv + 2);
        perror(argv[2]);
        _exit(127);
    }
    int status;
    struct rusage ru;
    while (wait4(pid, &status, 0, &ru) < 0) {
    }
    long long t1 = now();
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    fprintf(out, "%lld %lld %ld %d\n", t0, t1, ru.ru_maxrss, code);
    fclose(out);
    return code;
}
