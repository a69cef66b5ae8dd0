/* The floor for collection cost: open every stat file of every cgroup once,
 * then per pass re-read each with pread(2) into a buffer and parse the
 * numbers in it (strtoull over every token), like the agent does.
 *
 *   creader PASSES FILE... -- CGROUP_DIR...
 *   (cgroup dirs may also come on stdin, one per line, when none follow "--")
 * Prints: cgroups=N fds=N passes=N seconds_per_pass=S (mean) min_pass=S
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);   /* CPU time: robust on a shared machine */
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s PASSES FILE... -- CGROUP_DIR...\n", argv[0]);
        return 2;
    }
    int passes = atoi(argv[1]);
    int sep = 2;
    while (sep < argc && strcmp(argv[sep], "--") != 0) sep++;
    int nfiles = sep - 2;
    char **files = argv + 2;

    size_t cap = 1024, ndirs = 0;
    char **dirs = malloc(cap * sizeof *dirs);
    for (int i = sep + 1; i < argc; i++) {
        if (ndirs == cap) dirs = realloc(dirs, (cap *= 2) * sizeof *dirs);
        dirs[ndirs++] = argv[i];
    }
    if (ndirs == 0) {
        char line[4096];
        while (fgets(line, sizeof line, stdin)) {
            line[strcspn(line, "\n")] = 0;
            if (!*line) continue;
            if (ndirs == cap) dirs = realloc(dirs, (cap *= 2) * sizeof *dirs);
            dirs[ndirs++] = strdup(line);
        }
    }

    struct rlimit rl;                       /* one descriptor per file per cgroup */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    int *fds = malloc(ndirs * nfiles * sizeof *fds);
    size_t nfds = 0;
    char path[4096];
    for (size_t d = 0; d < ndirs; d++)
        for (int f = 0; f < nfiles; f++) {
            snprintf(path, sizeof path, "%s/%s", dirs[d], files[f]);
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd >= 0) fds[nfds++] = fd;
            else if (errno != ENOENT) { perror(path); return 1; }
        }

    static char buf[65536];
    unsigned long long checksum = 0;
    double t0 = now(), min_pass = 1e9;
    for (int p = 0; p < passes; p++) {
        double tp = now();
        for (size_t i = 0; i < nfds; i++) {
            ssize_t n = pread(fds[i], buf, sizeof buf - 1, 0);
            if (n < 0) { perror("pread"); return 1; }
            buf[n] = 0;
            for (char *s = buf; *s;) {          /* parse every number */
                if (*s >= '0' && *s <= '9') checksum += strtoull(s, &s, 10);
                else s++;
            }
        }
        tp = now() - tp;
        if (tp < min_pass) min_pass = tp;
    }
    double dt = now() - t0;
    printf("cgroups=%zu fds=%zu passes=%d seconds_per_pass=%.9f min_pass=%.9f checksum=%llu\n",
           ndirs, nfds, passes, dt / passes, min_pass, checksum);
    return 0;
}
