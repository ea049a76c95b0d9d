/*
 * kdedup - the version, in one place (--version, logs, kdedup_build_info).
 */
#ifndef KD_VERSION_H
#define KD_VERSION_H

#define KD_VERSION "0.1.0"

#endif /* KD_VERSION_H */
