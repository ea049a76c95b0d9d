/*
 * kdedup - what the process does to keep what it holds to itself: its
 * memory holds keys and secrets (no core dumps, no ptrace by other processes
 * of its user), and its files hold raw keys (private to its user, the store
 * directory 0700).
 */
#ifndef KD_HARDEN_H
#define KD_HARDEN_H

#include <stddef.h>

typedef enum kd_harden_result {
    KD_HARDEN_OK,
    KD_HARDEN_WARN, /* done as far as allowed; the reason is in errstr */
    KD_HARDEN_FAIL  /* the reason is in errstr */
} kd_harden_result;

/* umask(077) (every file kdedup creates is private to its user), core dumps
 * off (RLIMIT_CORE 0, soft and hard) and the process not dumpable
 * (PR_SET_DUMPABLE 0: no core, no ptrace or /proc/PID/mem by other
 * processes of the user). Call first thing in main. KD_HARDEN_FAIL when a
 * step failed, with errstr set. */
kd_harden_result kd_harden_process(char *errstr, size_t errstr_size);

/* Tightens an existing store directory to 0700 and the files and
 * directories directly in it to owner-only modes (RocksDB's files to 0600),
 * whatever made them (a Dockerfile's 0755, an emptyDir's 0777, an older
 * kdedup without umask). A missing directory is left to the store, which
 * creates it under kdedup's umask. KD_HARDEN_WARN when the directory or a
 * file is not kdedup's to chmod (a volume's mount point owned by root):
 * the rest is still done. */
kd_harden_result kd_harden_store_dir(const char *path, char *errstr, size_t errstr_size);

#endif /* KD_HARDEN_H */
