# Run once by the MySQL image's entrypoint when the data volume is new. Not executable on purpose: the
# entrypoint then sources it, so its docker_process_sql (root over the init socket), mysql_note and
# mysql_error are at hand. Valid on MySQL 8.4 (and MariaDB 10.11+).
#
# The image created MYSQL_USER with rights on MYSQL_DATABASE only; the pipeline's schemas are named
# neuralreg_<...> (<prefix>_<module>), so the application account gets ALL on `neuralreg\_%` (`\_` a
# literal underscore: the same pattern as neuralreg_schema/db/connection.py SCHEMA_PATTERN), and the
# least-privilege worker account NEURALREG_WORKER_USER (password NEURALREG_WORKER_PASSWORD, both from
# .env) gets the rows and its job tables there (no schema exists yet to scope it to: `neuralreg --prefix P
# db worker-user` later narrows it to one study, db/accounts.py ensure_worker_user). User names and
# passwords are passed as SQL string literals, quotes and backslashes escaped.

_neuralreg_sql_string() {
    local value=${1//\\/\\\\}
    printf "'%s'" "${value//\'/\'\'}"
}

if [ -z "${MYSQL_USER:-}" ] || [ -z "${MYSQL_PASSWORD:-}" ]; then
    mysql_error "neuralreg: MYSQL_USER and MYSQL_PASSWORD must be set (\`neuralreg db up\` writes them to .env)"
fi
mysql_note "neuralreg: ALL PRIVILEGES on \`neuralreg\\_%\` schemas to '${MYSQL_USER}'@'%'"
docker_process_sql --database=mysql <<-EOSQL
	GRANT ALL PRIVILEGES ON \`neuralreg\\_%\`.* TO $(_neuralreg_sql_string "$MYSQL_USER")@'%';
EOSQL

_neuralreg_worker=${NEURALREG_WORKER_USER:-neuralreg_worker}
if [ -n "${NEURALREG_WORKER_PASSWORD:-}" ]; then
    mysql_note "neuralreg: least-privilege worker account '${_neuralreg_worker}'@'%'"
    docker_process_sql --database=mysql <<-EOSQL
	CREATE USER IF NOT EXISTS $(_neuralreg_sql_string "$_neuralreg_worker")@'%'
	    IDENTIFIED BY $(_neuralreg_sql_string "$NEURALREG_WORKER_PASSWORD");
	GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, INDEX, REFERENCES, LOCK TABLES, CREATE TEMPORARY TABLES
	    ON \`neuralreg\\_%\`.* TO $(_neuralreg_sql_string "$_neuralreg_worker")@'%';
EOSQL
else
    mysql_note "neuralreg: NEURALREG_WORKER_PASSWORD is empty: no worker account (\`neuralreg db worker-user\` makes one)"
fi
unset _neuralreg_worker
