/* SPDX-License-Identifier: MIT */
/*
 * cmd.h -- protocol-independent pieces of the commands, for every front end
 * (the RESP/inline server here, the HTTP/JSON one later): arguments to an
 * engine interaction, and the text of STATS fields and HISTORY records.
 * Pure functions: no server, no connection, no allocation.
 */
#ifndef SHORTSTAT_NET_CMD_H
#define SHORTSTAT_NET_CMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/eng.h"
#include "net/proto.h"

enum net_rc {
    NET_OK = 0,
    NET_EINVAL = -1,   /* bad argument: err is "<field>: <why>" */
};

#define NET_ERR_MAX 192u

/* Strict decimal as Redis's string2ll reads it: digits only (i64: an
 * optional leading '-'), no leading zero but in "0" itself, no "-0", no
 * overflow. */
int net_parse_u64(const uint8_t *p, size_t len, uint64_t *out);
int net_parse_i64(const uint8_t *p, size_t len, int64_t *out);
/* An id (short, user, client): net_parse_u64 of at least 1, as 0 means
 * "none" to the engine. NET_ID_RULE is how errors word it. */
int net_parse_id(const uint8_t *p, size_t len, uint64_t *out);
#define NET_ID_RULE "must be an integer 1..18446744073709551615"

/* TRACK's arguments after the command name: <short_id> <type> [field=value
 * ...] with fields session, user, ts, watch_ms, platform, ip, ua. Fills ix
 * with pointers into args (borrowed, as eng_ix expects). Syntax only: the
 * engine's eng_validate/eng_record judge the values. Unknown, repeated or
 * malformed fields -> NET_EINVAL with "<field>: <why>". */
int net_track_parse(const struct proto_arg *args, size_t nargs, struct eng_ix *ix, char *err,
                    size_t errcap);

/* Decimal with six digits after the point ("1523.333333"). */
#define NET_DECIMAL_MAX 64u
size_t net_fmt_decimal(char *out, double v);

/* STATS in protocol order: the 15 fixed fields, then shares_<platform> in
 * first-seen order. value is decimal text; is_decimal marks the three
 * fractional ones (avg_watch_ms, engagement_rate, score). */
typedef void (*net_field_fn)(void *ud, const char *name, size_t name_len, const char *value,
                             size_t value_len, bool is_decimal);
size_t net_stats_nfields(const struct eng_stats *st);
void net_stats_fields(const struct eng_stats *st, net_field_fn fn, void *ud);

/* Every metric TOP ranks by, "score, view_count, ...", for error messages
 * (NUL-terminated; cap 256 holds them all). */
void net_metric_list(char *out, size_t cap);

/* A TOP value as text: decimal metrics with six digits, counts as integers. */
bool net_metric_is_decimal(enum eng_metric m);
size_t net_fmt_metric(char *out, enum eng_metric m, double v);  /* NET_DECIMAL_MAX */

/* A history record as the arguments of the TRACK that recorded it, with its
 * ts: `123 view ts=... session=... user=... watch_ms=... platform=... ip=...
 * ua="..."` (fields present only when set, quoted by proto_quote), so that
 * "TRACK " + record is a valid command. Returns the length (no NUL). */
#define NET_HISTORY_REC_MAX 4096u
size_t net_history_format(const struct eng_history_rec *r, char *out);

#endif
