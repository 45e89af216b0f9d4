#!/usr/bin/env bash
# Back up the celers_* tables (and the database's stored routines) of a DSN's database.
#
#   scripts/backup.sh DSN [DIR] [KEEP]
#
#   DSN   mysql://user:pass@host:port/db or mysql://user:pass@localhost/db?socket=/path
#   DIR   folder for the backups (default: backups/); created when missing
#   KEEP  how many backups of this database to keep, newest first (default 7; 0 keeps all)
#
# Writes DIR/celers-<db>-<UTC time>.sql.gz with mariadb-dump (or mysqldump)
# --single-transaction (a consistent snapshot without locking InnoDB tables) --routines
# --triggers, prints its path, then deletes the oldest backups of the database beyond KEEP.
# Restore with scripts/restore.sh. The password goes through a private option file, never
# the command line.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/dsn-client.sh
. "$ROOT/scripts/dsn-client.sh"

[ $# -ge 1 ] || { sed -n '2,14p' "$0" >&2; exit 2; }
DSN=$1
DIR=${2:-${CELERS_BACKUP_DIR:-backups}}
KEEP=${3:-${CELERS_BACKUP_KEEP:-7}}
[[ $KEEP =~ ^[0-9]+$ ]] || { echo "backup: KEEP must be a number" >&2; exit 2; }

dsn_client_setup "$DSN"
DUMP=$(pick mariadb-dump mysqldump) || { echo "backup: mariadb-dump/mysqldump not found" >&2; exit 1; }
CLIENT=$(pick mariadb mysql) || { echo "backup: mariadb/mysql client not found" >&2; exit 1; }

mapfile -t TABLES < <("$CLIENT" --defaults-file="$CNF" --batch --skip-column-names "$DB" \
    -e "SHOW TABLES LIKE 'celers\\_%'")
[ ${#TABLES[@]} -gt 0 ] || { echo "backup: no celers_* tables in database $DB" >&2; exit 1; }

mkdir -p "$DIR"
STAMP=$(date -u +%Y%m%dT%H%M%S.%NZ)
OUT="$DIR/celers-$DB-$STAMP.sql.gz"
TMP="$OUT.part"
trap 'rm -f "$CNF" "$TMP"' EXIT
"$DUMP" --defaults-file="$CNF" --single-transaction --routines --triggers --no-tablespaces \
    --hex-blob --default-character-set=utf8mb4 "$DB" "${TABLES[@]}" | gzip -c >"$TMP"
mv "$TMP" "$OUT"
echo "$OUT"

# retention: the newest KEEP backups of this database stay
if [ "$KEEP" -gt 0 ]; then
    ls -1 "$DIR"/celers-"$DB"-*.sql.gz 2>/dev/null | sort -r | tail -n +$((KEEP + 1)) |
        while read -r old; do rm -f -- "$old"; done
fi
