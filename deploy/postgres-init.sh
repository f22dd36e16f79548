#!/bin/sh
# First start of the postgres container only (an empty data volume): one role and database for the registry,
# one role and two databases for Temporal. The superuser (POSTGRES_PASSWORD) stays inside this container;
# pairshift never receives it, and neither role can read the other's databases.
# A volume initialised before this script existed: run it once by hand
#   docker-compose exec postgres sh /docker-entrypoint-initdb.d/10-roles.sh
# then move the data over (pg_dump as the old user, restore as the new role) and drop the old role.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v registry_pw="$REGISTRY_DB_PASSWORD" -v temporal_pw="$TEMPORAL_DB_PASSWORD" <<'SQL'
CREATE ROLE pairshift LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'registry_pw';
CREATE DATABASE pairshift OWNER pairshift;
REVOKE ALL ON DATABASE pairshift FROM PUBLIC;
CREATE ROLE temporal LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'temporal_pw';
CREATE DATABASE temporal OWNER temporal;
CREATE DATABASE temporal_visibility OWNER temporal;
REVOKE ALL ON DATABASE temporal FROM PUBLIC;
REVOKE ALL ON DATABASE temporal_visibility FROM PUBLIC;
SQL
