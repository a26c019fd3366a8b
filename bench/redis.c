/* SPDX-License-Identifier: MIT */
/*
 * redis.c -- the same workload, recorded in redis-server the way a Redis
 * user would: one EVALSHA per interaction of bench_lua_script(), pipelined
 * over the same connections at the same depth as shortstat gets.
 *
 * Sequence, mirrored by main.c's shortstat side so the ratios compare like
 * with like: start on a free loopback port in a temp dir (no save points,
 * no AOF), time until PING answers, SCRIPT LOAD, apply the stream, read
 * INFO memory, BGSAVE and poll until it ends, SIGTERM (nothing is saved on
 * shutdown without save points), restart on the RDB and time until PING
 * answers +PONG rather than -LOADING.
 */
#include "bench/bench.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static int spawn_redis(const char *path, int cpu, const char *dir, uint16_t port,
                       struct bench_proc *p, double *ready_s, char *msg, size_t msglen)
{
    char ps[8], log[300];
    snprintf(ps, sizeof ps, "%u", (unsigned)port);
    snprintf(log, sizeof log, "%s/redis.log", dir);
    const char *argv[] = {path, "--port", ps, "--bind", "127.0.0.1", "--dir", dir,
                          "--dbfilename", "dump.rdb", "--save", "", "--appendonly", "no",
                          "--daemonize", "no", "--protected-mode", "no", "--logfile", "",
                          NULL};
    int rc = bench_spawn(argv, cpu, log, p, msg, msglen);
    if (rc)
        return rc;
    p->port = port;
    rc = bench_wait_ready(p, "127.0.0.1", 120, ready_s, msg, msglen);
    if (rc)
        bench_stop(p, SIGKILL, 5);
    return rc;
}

static int ctl(uint16_t port, int argc, const char *const argv[], char **reply, char *msg,
               size_t msglen)
{
    struct bench_ctl c;
    *reply = NULL;
    if (bench_ctl_open(&c, "127.0.0.1", port, 2000)) {
        snprintf(msg, msglen, "redis: cannot connect to port %u", (unsigned)port);
        return BENCH_EIO;
    }
    int rc = bench_ctl_cmd(&c, argc, argv, 60000, reply);
    bench_ctl_close(&c);
    if (rc) {
        snprintf(msg, msglen, "redis %s: %s", argv[0], *reply ? *reply : "no reply");
        free(*reply);
        *reply = NULL;
    }
    return rc;
}

int bench_redis_full(const struct bench_redis_cfg *cfg, const struct bench_wl *w,
                     struct bench_redis_res *r, char *msg, size_t msglen)
{
    memset(r, 0, sizeof *r);
    char dir[256];
    int rc = bench_tmpdir("redis", dir, msg, msglen);
    if (rc)
        return rc;
    uint16_t port;
    struct bench_proc p = {0};
    struct bench_stream st = {0};
    char *reply = NULL;
    if ((rc = bench_free_port(&port, msg, msglen)))
        goto out;
    if ((rc = spawn_redis(cfg->path, cfg->cpu, dir, port, &p, &r->empty_ready_s, msg, msglen)))
        goto out;

    const char *info_server[] = {"INFO", "server"};
    if (ctl(port, 2, info_server, &reply, msg, msglen) == BENCH_OK)
        bench_info_str(reply, "redis_version", r->version, sizeof r->version);
    free(reply);
    reply = NULL;

    const char *load[] = {"SCRIPT", "LOAD", bench_lua_script()};
    if ((rc = ctl(port, 3, load, &reply, msg, msglen)))
        goto out;
    if (strlen(reply) != 40) {
        snprintf(msg, msglen, "redis SCRIPT LOAD answered '%.60s'", reply);
        rc = BENCH_ESERVER;
        goto out;
    }
    char sha[41];
    memcpy(sha, reply, 41);
    free(reply);
    reply = NULL;

    if ((rc = bench_stream_build(w, BENCH_S_EVAL, BENCH_RESP, sha, cfg->history, &st, msg,
                                 msglen)))
        goto out;
    r->stream_bytes = st.len;
    struct bench_run_cfg rc_cfg = {
        .host = "127.0.0.1", .port = port, .label = "redis EVALSHA", .progress = cfg->progress,
        .stream = &st, .conns = cfg->conns, .pipeline = cfg->pipeline, .timeout_s = 1800,
    };
    if ((rc = bench_run(&rc_cfg, &r->run, msg, msglen)))
        goto out;
    bench_stream_free(&st);
    if (r->run.errors) {
        snprintf(msg, msglen, "redis answered %llu errors, first: %s",
                 (unsigned long long)r->run.errors, r->run.first_error);
        rc = BENCH_ESERVER;
        goto out;
    }

    const char *info_mem[] = {"INFO", "memory"};
    if ((rc = ctl(port, 2, info_mem, &reply, msg, msglen)))
        goto out;
    bench_info_u64(reply, "used_memory", &r->used_memory);
    bench_info_u64(reply, "used_memory_rss", &r->rss_info);
    free(reply);
    reply = NULL;
    r->rss = bench_rss(p.pid);
    const char *dbsize[] = {"DBSIZE"};
    if (ctl(port, 1, dbsize, &reply, msg, msglen) == BENCH_OK)
        r->keys = strtoull(reply, NULL, 10);
    free(reply);
    reply = NULL;

    /* BGSAVE. Its end is when the child renames the new file into place,
     * seen by polling the file every 2 ms as shortstat's INFO is polled:
     * redis-server itself notices its child's exit only at its next cron
     * tick (up to 100 ms later at hz 10), which is not save time. */
    char rdb[300];
    snprintf(rdb, sizeof rdb, "%s/dump.rdb", dir);
    struct stat sb;
    bool had = stat(rdb, &sb) == 0;
    ino_t ino0 = had ? sb.st_ino : 0;
    const char *bgsave[] = {"BGSAVE"};
    double t0 = bench_now(), t_file = 0;
    if ((rc = ctl(port, 1, bgsave, &reply, msg, msglen)))
        goto out;
    free(reply);
    reply = NULL;
    /* The file's arrival, polled every 2 ms, is the save's end; INFO, asked
     * every 50 ms, says when the child is done and whether it failed (no
     * file then ever appears). A save that takes 30 min has hung. */
    const char *info_pers[] = {"INFO", "persistence"};
    for (unsigned i = 0;; i++) {
        if (bench_now() - t0 > 30 * 60) {  /* by the clock, not the passes */
            snprintf(msg, msglen, "redis BGSAVE: not done after 30 min");
            rc = BENCH_ETIMEOUT;
            goto out;
        }
        if (!t_file && stat(rdb, &sb) == 0 && (!had || sb.st_ino != ino0))
            t_file = bench_now();
        if (i % 25 == 0) {
            if ((rc = ctl(port, 2, info_pers, &reply, msg, msglen)))
                goto out;
            uint64_t busy = 1;
            bench_info_u64(reply, "rdb_bgsave_in_progress", &busy);
            if (busy == 0) {
                char how[16] = "";
                bench_info_str(reply, "rdb_last_bgsave_status", how, sizeof how);
                if (strcmp(how, "ok") != 0) {
                    snprintf(msg, msglen, "redis BGSAVE failed: rdb_last_bgsave_status:%s", how);
                    rc = BENCH_ESERVER;
                    goto out;
                }
                break;
            }
            free(reply);
            reply = NULL;
        }
        nanosleep(&(struct timespec){0, 2000000}, NULL);
    }
    r->bgsave_ms = ((t_file ? t_file : bench_now()) - t0) * 1e3;
    free(reply);
    reply = NULL;
    const char *info_stats[] = {"INFO", "stats"};
    if (ctl(port, 2, info_stats, &reply, msg, msglen) == BENCH_OK)
        bench_info_u64(reply, "latest_fork_usec", &r->fork_usec);
    free(reply);
    reply = NULL;
    if (stat(rdb, &sb) == 0)
        r->rdb_bytes = (uint64_t)sb.st_size;

    bench_stop(&p, SIGTERM, 30);
    double sorted[BENCH_RESTARTS];
    for (unsigned k = 0; k < BENCH_RESTARTS; k++) {
        if (k)
            bench_stop(&p, SIGKILL, 10);  /* no save at exit: the same RDB each time */
        if ((rc = spawn_redis(cfg->path, cfg->cpu, dir, port, &p, &r->load_ready_all_s[k], msg,
                              msglen)))
            goto out;
        sorted[k] = r->load_ready_all_s[k];
    }
    r->load_ready_s = bench_median(sorted, BENCH_RESTARTS);
    if (ctl(port, 1, dbsize, &reply, msg, msglen) == BENCH_OK)
        r->keys_after_load = strtoull(reply, NULL, 10);
    free(reply);
    reply = NULL;
out:
    free(reply);
    bench_stream_free(&st);
    if (p.pid > 0)
        bench_stop(&p, SIGKILL, 10);
    bench_rmtree(dir);
    return rc;
}
