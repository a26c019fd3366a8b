/* SPDX-License-Identifier: MIT */
/*
 * prefault.h -- faults the engine's fresh memory in on a background thread
 * (design in prefault.c). Used through eng_config.populate.
 */
#ifndef SHORTSTAT_NET_PREFAULT_H
#define SHORTSTAT_NET_PREFAULT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct net_prefault;

/* Starts the thread; NULL (with errno) when it cannot. */
struct net_prefault *net_prefault_start(void);
/* Stops and joins the thread; requests still queued are dropped. */
void net_prefault_stop(struct net_prefault *p);
/* Queue [addr, addr + len) to be faulted in; never blocks on the thread's
 * work, drops the request when the queue is full. Safe to call with p NULL. */
void net_prefault_request(struct net_prefault *p, void *addr, size_t len);
/* While paused the thread starts no new step (requests still queue);
 * pausing waits for the step in flight (one huge page at most), so from its
 * return until it is resumed the thread touches no memory. The server
 * pauses it for a snapshot: after fork() every page the parent
 * populates or writes is one more copy-on-write fault, and populating a
 * range the engine had already touched would copy all of it. */
void net_prefault_pause(struct net_prefault *p, bool paused);
/* Whether its steps run at normal priority (leaving SCHED_IDLE needs root
 * or CAP_SYS_NICE), so that a busy host cannot stall the loop behind one. */
bool net_prefault_boosted(struct net_prefault *p);
/* Bytes faulted in, requests dropped (queue full or range gone). */
void net_prefault_stats(struct net_prefault *p, uint64_t *bytes, uint64_t *dropped);
/* Waits until the queue is empty and the thread idle (tests; not while paused). */
void net_prefault_drain(struct net_prefault *p);

#endif
