/*
 * kdedup - the binary's sub-commands besides the sidecar itself.
 */
#ifndef KD_TOOLS_H
#define KD_TOOLS_H

/* `kdedup demo`: a self-contained run over an embedded mock cluster (see
 * tools/demo.c). Returns the exit code. */
int kd_demo_main(int argc, char **argv);

/* `kdedup mock`: a mock cluster in its own process for tests, driven by
 * commands on stdin (see mockd.c). Returns the exit code. */
int kd_mockd_main(int argc, char **argv);

/* `kdedup lookup`: prints the store's state and receipt of the keys read
 * on stdin (see lookup.c). Returns the exit code. */
int kd_lookup_main(int argc, char **argv);

#endif /* KD_TOOLS_H */
