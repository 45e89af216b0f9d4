/* Inspection, results, dead-letter queue, health and upkeep. */
#ifndef CELERS_ADMIN_H
#define CELERS_ADMIN_H

#include "connection.h"
#include "statement.h"

#endif
