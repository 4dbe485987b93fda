#define _GNU_SOURCE
/* Files: a file of /tmp written by one thread and read back by another (on another
 * node when there are two), a file of the root read and stat'ed, /tmp listed, dup and
 * pread, O_EXCL, ftruncate, unlink, statx (glibc), directories in /tmp (mkdir, files
 * below them, listing, rename of files and directories, rmdir, chdir). The test runs it natively chrooted into the same
 * root, so every line must match. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define BYTES (300 * 1000)

static void *writer(void *arg) {
    (void)arg;
    int fd = open("/tmp/from-thread", O_CREAT | O_WRONLY | O_TRUNC, 0644);
    if (fd < 0) return (void *)1;
    char buf[1000];
    for (int block = 0; block < BYTES / 1000; block++) {
        for (int i = 0; i < 1000; i++) buf[i] = (char)(block * 7 + i);
        if (write(fd, buf, sizeof buf) != sizeof buf) return (void *)2;
    }
    close(fd);
    return NULL;
}

/* A pipe between two threads: the producer writes more than the pipe holds, so both
 * ends wait on each other. */
static int pipe_fds[2];

static void *producer(void *arg) {
    (void)arg;
    char buf[777];
    for (int block = 0; block < 400; block++) {
        for (int i = 0; i < (int)sizeof buf; i++) buf[i] = (char)(block + i * 3);
        if (write(pipe_fds[1], buf, sizeof buf) != sizeof buf) return (void *)1;
    }
    close(pipe_fds[1]);
    return NULL;
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(void) {
    pthread_t t;
    void *r;
    pthread_create(&t, NULL, writer, NULL);
    pthread_join(t, &r);
    printf("writer: %ld\n", (long)r);

    int fd = open("/tmp/from-thread", O_RDONLY);
    unsigned long sum = 0, n = 0;
    char buf[4096];
    ssize_t got;
    while ((got = read(fd, buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < got; i++) sum = sum * 31 + (unsigned char)buf[i], n++;
    printf("read back %lu bytes, sum %lu\n", n, sum);
    int copy = dup(fd);
    char mid[8] = {0};
    pread(copy, mid, 4, 1234);
    printf("pread %d %d %d %d, offsets shared: %ld\n", mid[0], mid[1], mid[2], mid[3],
           (long)lseek(copy, 0, SEEK_CUR));
    close(copy);
    close(fd);

    struct stat st;
    fd = open("/words.txt", O_RDONLY);
    fstat(fd, &st);
    int lines = 0;
    while ((got = read(fd, buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < got; i++) lines += buf[i] == '\n';
    printf("/words.txt: %ld bytes, %d lines, regular %d\n", (long)st.st_size, lines,
           S_ISREG(st.st_mode));
#ifdef __GLIBC__
    /* statx of a path, of a descriptor (AT_EMPTY_PATH) and of nothing. */
    struct statx sx, fx;
    int by_path = statx(AT_FDCWD, "/words.txt", 0, STATX_BASIC_STATS, &sx);
    int by_fd = statx(fd, "", AT_EMPTY_PATH, STATX_SIZE, &fx);
    printf("statx %d %d: size %llu %llu, regular %d, mode %o, nlink %u, basic %d, ino same %d\n",
           by_path, by_fd, (unsigned long long)sx.stx_size, (unsigned long long)fx.stx_size,
           S_ISREG(sx.stx_mode), sx.stx_mode & 0777, sx.stx_nlink,
           (sx.stx_mask & STATX_BASIC_STATS) == STATX_BASIC_STATS,
           sx.stx_ino == (unsigned long long)st.st_ino);
    printf("statx mtime same as stat %d, missing: %s\n",
           sx.stx_mtime.tv_sec == st.st_mtim.tv_sec && sx.stx_mtime.tv_nsec == st.st_mtim.tv_nsec,
           statx(AT_FDCWD, "/nothing", 0, STATX_BASIC_STATS, &sx) < 0 ? strerror(errno) : "found");
#endif
    /* A private read-only mapping of the file holds its bytes, then zeros. */
    char *mapped = mmap(NULL, 8192, PROT_READ, MAP_PRIVATE, fd, 0);
    printf("mapped: %.*s| then %d\n", (int)st.st_size, mapped, mapped[st.st_size + 100]);
    munmap(mapped, 8192);
    close(fd);

    int excl = open("/tmp/from-thread", O_CREAT | O_EXCL | O_WRONLY, 0644);
    printf("O_EXCL on an existing file: %s\n", excl < 0 ? strerror(errno) : "created");
    fd = open("/tmp/second", O_CREAT | O_RDWR, 0600);
    write(fd, "hello, tmp", 10);
    ftruncate(fd, 5);
    fstat(fd, &st);
    lseek(fd, 0, SEEK_SET);
    memset(buf, 0, 16);
    read(fd, buf, 16);
    printf("truncated to %ld: '%s'\n", (long)st.st_size, buf);
    close(fd);

    DIR *dir = opendir("/tmp");
    char *names[16];
    int count = 0;
    struct dirent *e;
    while ((e = readdir(dir)) && count < 16)
        if (e->d_name[0] != '.') names[count++] = strdup(e->d_name);
    closedir(dir);
    qsort(names, count, sizeof names[0], by_name);
    for (int i = 0; i < count; i++) printf("/tmp has %s\n", names[i]);

    unlink("/tmp/second");
    printf("after unlink: %s\n", access("/tmp/second", F_OK) < 0 ? strerror(errno) : "still there");
    unlink("/tmp/from-thread");

    /* Directories of /tmp. */
#define SAY(what, call) printf("%s: %s\n", what, (call) == 0 ? "ok" : strerror(errno))
    SAY("mkdir /tmp/d", mkdir("/tmp/d", 0755));
    SAY("mkdir /tmp/d again", mkdir("/tmp/d", 0755));
    SAY("mkdir /tmp/x/y", mkdir("/tmp/x/y", 0755));
    SAY("mkdir /tmp/d/e", mkdir("/tmp/d/e", 0755));
    fd = open("/tmp/d/e/f", O_CREAT | O_WRONLY, 0644);
    write(fd, "deep", 4);
    close(fd);
    fd = open("/tmp/d/g", O_CREAT | O_WRONLY, 0644);
    close(fd);
    printf("open a directory for writing: %s\n",
           open("/tmp/d", O_WRONLY) < 0 ? strerror(errno) : "opened");
    printf("file as a directory: %s\n",
           open("/tmp/d/g/h", O_CREAT | O_WRONLY, 0644) < 0 ? strerror(errno) : "opened");
    stat("/tmp/d", &st);
    printf("/tmp/d is a directory %d\n", S_ISDIR(st.st_mode));
    dir = opendir("/tmp/d");
    count = 0;
    while ((e = readdir(dir)) && count < 16)
        if (e->d_name[0] != '.')
            names[count++] = strdup(e->d_name);
    closedir(dir);
    qsort(names, count, sizeof names[0], by_name);
    for (int i = 0; i < count; i++) printf("/tmp/d has %s\n", names[i]);
    SAY("rmdir a non-empty /tmp/d", rmdir("/tmp/d"));
    SAY("unlink a directory", unlink("/tmp/d/e"));
    SAY("rename /tmp/d/g to /tmp/d/e/g2", rename("/tmp/d/g", "/tmp/d/e/g2"));
    SAY("rename /tmp/d to /tmp/m", rename("/tmp/d", "/tmp/m"));
    SAY("rename /tmp/m into itself", rename("/tmp/m", "/tmp/m/e/n"));
    SAY("chdir /tmp/m/e", chdir("/tmp/m/e"));
    memset(buf, 0, 8);
    fd = open("f", O_RDONLY);
    read(fd, buf, 8);
    close(fd);
    printf("relative read after the renames: '%s'\n", buf);
    SAY("chdir /", chdir("/"));
    SAY("unlink /tmp/m/e/f", unlink("/tmp/m/e/f"));
    SAY("unlink /tmp/m/e/g2", unlink("/tmp/m/e/g2"));
    SAY("rmdir /tmp/m/e", rmdir("/tmp/m/e"));
    SAY("rmdir /tmp/m", rmdir("/tmp/m"));
    SAY("rmdir /tmp/m again", rmdir("/tmp/m"));

    /* Names relative to a directory descriptor. */
    SAY("mkdir /tmp/r", mkdir("/tmp/r", 0755));
    int dfd = open("/tmp/r", O_RDONLY | O_DIRECTORY);
    fd = openat(dfd, "inner", O_CREAT | O_WRONLY, 0644);
    write(fd, "rel", 3);
    close(fd);
    fstatat(dfd, "inner", &st, 0);
    printf("openat and fstatat by a directory descriptor: %ld bytes\n", (long)st.st_size);
    SAY("mkdirat sub", mkdirat(dfd, "sub", 0755));
    SAY("renameat inner to sub/inner2", renameat(dfd, "inner", dfd, "sub/inner2"));
    printf("/tmp/r/sub/inner2 exists: %d\n", access("/tmp/r/sub/inner2", F_OK) == 0);
    SAY("unlinkat sub/inner2", unlinkat(dfd, "sub/inner2", 0));
    SAY("unlinkat sub as a directory", unlinkat(dfd, "sub", AT_REMOVEDIR));
    SAY("fchdir to /tmp/r", fchdir(dfd));
    close(open("here", O_CREAT | O_WRONLY, 0644));
    SAY("chdir /", chdir("/"));
    printf("/tmp/r/here exists: %d\n", access("/tmp/r/here", F_OK) == 0);
    printf("openat relative to a file: %s\n",
           openat(1, "x", O_RDONLY) < 0 ? strerror(errno) : "opened");
    close(dfd);
    unlink("/tmp/r/here");
    SAY("rmdir /tmp/r", rmdir("/tmp/r"));

    pipe(pipe_fds);
    pthread_create(&t, NULL, producer, NULL);
    unsigned long piped = 0, psum = 0;
    while ((got = read(pipe_fds[0], buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < got; i++) psum = psum * 31 + (unsigned char)buf[i], piped++;
    pthread_join(t, &r);
    printf("pipe: %lu bytes, sum %lu, producer %ld, end of file %ld\n", piped, psum, (long)r,
           (long)read(pipe_fds[0], buf, 1));
    close(pipe_fds[0]);
    return 0;
}
