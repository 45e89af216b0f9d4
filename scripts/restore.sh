#!/usr/bin/env bash
# Restore a backup made by scripts/backup.sh into a DSN's database.
#
#   scripts/restore.sh DSN FILE.sql.gz
#
# Creates the database when it does not exist, then replays the dump (gunzip | mariadb):
# the celers_* tables in the dump are dropped and recreated with their rows, and the stored
# routines are recreated. Other tables of the database are left alone.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/dsn-client.sh
. "$ROOT/scripts/dsn-client.sh"

[ $# -eq 2 ] || { sed -n '2,8p' "$0" >&2; exit 2; }
DSN=$1
FILE=$2
[ -f "$FILE" ] || { echo "restore: no such file: $FILE" >&2; exit 1; }
gzip -t "$FILE" || { echo "restore: $FILE is not a valid gzip file" >&2; exit 1; }

dsn_client_setup "$DSN"
CLIENT=$(pick mariadb mysql) || { echo "restore: mariadb/mysql client not found" >&2; exit 1; }

"$CLIENT" --defaults-file="$CNF" -e "CREATE DATABASE IF NOT EXISTS \`${DB//\`/\`\`}\`"
gunzip -c "$FILE" | "$CLIENT" --defaults-file="$CNF" --default-character-set=utf8mb4 "$DB"
echo "restored $FILE into $DB"
