-- Schema upgrade from 4.18.0.0 to 4.19.0.0
--;
ALTER TABLE `cloud`.`vm_instance` -- why
 ADD COLUMN x INT;
CALL `cloud`.`IDEMPOTENT_ADD_COLUMN`('cloud.vm_instance', 'y', 'INT');
/* license
 header */
UPDATE cloud_usage.usage_event SET v = 'a;b' WHERE s = "cloud";
# note
   // note
DROP PROCEDURE IF EXISTS `cloud`.`p`;
CREATE PROCEDURE `cloud`.`p` (IN a INT) BEGIN SELECT 1; SELECT 'x--y'; END;
SELECT * FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'cloud'
