/*
 * kdedup - process and file hardening (see harden.h).
 */
#include "sidecar/harden.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

kd_harden_result kd_harden_process(char *errstr, size_t errstr_size) {
    struct rlimit none = {0, 0};

    umask(077);
    if (setrlimit(RLIMIT_CORE, &none) != 0) {
        snprintf(errstr, errstr_size, "cannot turn core dumps off: %s", strerror(errno));
        return KD_HARDEN_FAIL;
    }
#ifdef __linux__
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
        snprintf(errstr, errstr_size, "cannot make the process non-dumpable: %s",
                 strerror(errno));
        return KD_HARDEN_FAIL;
    }
#endif
    return KD_HARDEN_OK;
}

/* Why mode could not be tightened on what, for the warning. */
static kd_harden_result not_ours(const char *path, const char *name,
                                 const struct stat *st, int err, char *errstr,
                                 size_t errstr_size) {
    snprintf(
        errstr, errstr_size,
        "store \"%s\": %s%s is mode %04o and owned by uid %ld, not kdedup's uid %ld: "
        "cannot make it private (%s)%s",
        path, *name ? "its " : "", *name ? name : "the directory",
        (unsigned)(st->st_mode & 07777), (long)st->st_uid, (long)geteuid(), strerror(err),
        *name ? ""
              : "; point store.path at a subdirectory, which kdedup creates "
                "0700");
    return KD_HARDEN_WARN;
}

/* Owner-only modes for what is directly in the directory; symbolic links
 * are never followed. */
static kd_harden_result tighten_entries(const char *path, int fd, char *errstr,
                                        size_t errstr_size) {
    kd_harden_result res = KD_HARDEN_OK;
    DIR *dir = fdopendir(fd);
    struct dirent *e;

    if (!dir) {
        close(fd);
        snprintf(errstr, errstr_size, "store \"%s\": cannot list: %s", path,
                 strerror(errno));
        return KD_HARDEN_FAIL;
    }
    while ((e = readdir(dir))) {
        struct stat st;

        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") ||
            fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
            !(S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) || !(st.st_mode & 077))
            continue;
        if (fchmodat(fd, e->d_name, st.st_mode & 0700, 0) != 0 && res == KD_HARDEN_OK)
            res = not_ours(path, e->d_name, &st, errno, errstr, errstr_size);
    }
    closedir(dir); /* closes fd */
    return res;
}

kd_harden_result kd_harden_store_dir(const char *path, char *errstr, size_t errstr_size) {
    kd_harden_result res = KD_HARDEN_OK, files;
    char why[512] = "";
    struct stat st;
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (fd < 0 && errno == ENOENT)
        return KD_HARDEN_OK; /* the store creates it, under umask 077 */
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(errstr, errstr_size, "store \"%s\": cannot open the directory: %s", path,
                 strerror(errno));
        if (fd >= 0)
            close(fd);
        return KD_HARDEN_FAIL;
    }
    if ((st.st_mode & 07777) != 0700 && fchmod(fd, 0700) != 0)
        res = not_ours(path, "", &st, errno, errstr, errstr_size);
    /* The directory's own warning, if any, is the one to tell. */
    if ((files = tighten_entries(path, fd, why, sizeof(why))) > res) {
        res = files;
        snprintf(errstr, errstr_size, "%s", why);
    }
    return res;
}
