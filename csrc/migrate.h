/* Embedded schema migrations (sql/NNN_name.sql, compiled in at build time). */
#ifndef CELERS_MIGRATE_H
#define CELERS_MIGRATE_H

#include "connection.h"
#include "statement.h"

typedef struct ce_migration {
    const char *version; /* "001" */
    const char *name;    /* "initial_schema" */
    const char *sql;     /* statements separated by ';' at the end of a line */
} ce_migration;

/* Generated from sql/ by scripts/embed-sql.sh, in version order. */
extern const ce_migration ce_migrations[];
extern const unsigned int ce_migrations_count;

/* Apply the missing migrations in order under a server-wide named lock, so concurrent
 * callers serialise and each migration runs once. applied[i] is set to 1 for each migration
 * applied by this call (the array has ce_migrations_count entries). */
int ce_migrate(ce_conn *c, int *applied, ce_error *err);

/* Recorded migrations: rows of (version, name, Unix time of applied_at). */
int ce_list_migrations(ce_conn *c, ce_rows *out, ce_error *err);

#endif
