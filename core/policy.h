#ifndef CORE_POLICY_H
#define CORE_POLICY_H

#include <stddef.h>

#include "msg_limits.h"

/*
 * Policy files are Lua modules run in a sandbox: a fresh state whose
 * environment holds only the pure parts of the standard library, so a
 * policy cannot read files, open sockets or keep globals between loads.
 * Everything a policy returns is checked here, and a refusal names the
 * file and the field.
 */

/* Loads <dir>/limits.lua, calls for_context(ctx) and validates the
 * result into *out (written only on success). Returns 0, or -EINVAL with
 * the file and field named in err. */
int policy_load_limits(const char *dir, const struct limits_context *ctx,
		       struct limits *out, char *err, size_t errlen);

#endif
