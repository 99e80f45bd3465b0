-- Stored procedures a CloudStack 4.18 database carries, with their real bodies.
--
-- Source: apache/cloudstack engine/schema/src/main/resources/META-INF/db/procedures/
--   cloud.add_guest_os_and_hypervisor_mapping.sql      @ 9badc1d27ce69b3f396c52d544a8c054bcc0413e
--   cloud.idempotent_add_column.sql                    @ 9badc1d27ce69b3f396c52d544a8c054bcc0413e
--   cloud.idempotent_add_key.sql                       @ e0ea4991c1640375d07017d0217ed2b4ae584330
--   cloud.idempotent_add_unique_key.sql                @ b567165fd8d508f1f0aba3d32ba7f4541ce6e6e3
--   cloud.idempotent_change_column.sql                 @ b567165fd8d508f1f0aba3d32ba7f4541ce6e6e3
--   cloud.idempotent_create_unique_index.sql           @ 57925ec6c309b0eeb3b3089f858876a242f4f422
--   cloud.idempotent_drop_foreign_key.sql              @ 9badc1d27ce69b3f396c52d544a8c054bcc0413e
--   cloud.idempotent_drop_index.sql                    @ 2d7b07f955c07738adb95221720544029529af3d
--   cloud.idempotent_insert_guestos_hypervisor_mapping.sql @ 82362a07d760bde9d4f1115bc6bb676c9779c094
--   usage.idempotent_add_column.sql, usage.idempotent_change_column.sql @ 1502b6056d81ac9b652e23140d57c90814cc8363
--   usage.idempotent_drop_index.sql                    @ 9badc1d27ce69b3f396c52d544a8c054bcc0413e
-- Licensed to the Apache Software Foundation (ASF) under the Apache License, Version 2.0.
--
-- Changes for the lab: schema qualifiers are removed (each block runs after `USE` of the
-- seeded schema, and unqualified names in a body resolve to the procedure's schema), so the
-- schemas can have any name. IDEMPOTENT_ADD_FOREIGN_KEY and cloud_usage's
-- IDEMPOTENT_ADD_UNIQUE_INDEX keep the 4.18 signatures of the fixture; their bodies follow the
-- pattern of the other procedures (not read from source).
USE `cloud`;
DELIMITER ;;
CREATE PROCEDURE `ADD_GUEST_OS_AND_HYPERVISOR_MAPPING` (
    IN guest_os_category_id bigint(20) unsigned,
    IN guest_os_display_name VARCHAR(255),
    IN guest_os_hypervisor_hypervisor_type VARCHAR(32),
    IN guest_os_hypervisor_hypervisor_version VARCHAR(32),
    IN guest_os_hypervisor_guest_os_name VARCHAR(255)
        )
BEGIN
INSERT  INTO guest_os (uuid, category_id, display_name, created)
SELECT 	UUID(), guest_os_category_id, guest_os_display_name, now()
FROM    DUAL
WHERE 	not exists( SELECT  1
                     FROM    guest_os
                     WHERE   guest_os.category_id = guest_os_category_id
                       AND     guest_os.display_name = guest_os_display_name)

;	INSERT  INTO guest_os_hypervisor (uuid, hypervisor_type, hypervisor_version, guest_os_name, guest_os_id, created)
     SELECT 	UUID(), guest_os_hypervisor_hypervisor_type, guest_os_hypervisor_hypervisor_version, guest_os_hypervisor_guest_os_name, guest_os.id, now()
     FROM 	guest_os
     WHERE 	guest_os.category_id = guest_os_category_id
       AND 	guest_os.display_name = guest_os_display_name
       AND	NOT EXISTS (SELECT  1
                          FROM    guest_os_hypervisor as hypervisor
                          WHERE   hypervisor_type = guest_os_hypervisor_hypervisor_type
                            AND     hypervisor_version = guest_os_hypervisor_hypervisor_version
                            AND     hypervisor.guest_os_id = guest_os.id
                            AND     hypervisor.guest_os_name = guest_os_hypervisor_guest_os_name)
;END ;;
CREATE PROCEDURE `IDEMPOTENT_ADD_COLUMN` (
        IN in_table_name VARCHAR(200),
		IN in_column_name VARCHAR(200),
		IN in_column_definition VARCHAR(1000)
)
BEGIN
    DECLARE CONTINUE HANDLER FOR 1060 BEGIN END; SET @ddl = CONCAT('ALTER TABLE ', in_table_name); SET @ddl = CONCAT(@ddl, ' ', 'ADD COLUMN') ; SET @ddl = CONCAT(@ddl, ' ', in_column_name); SET @ddl = CONCAT(@ddl, ' ', in_column_definition); PREPARE stmt FROM @ddl; EXECUTE stmt; DEALLOCATE PREPARE stmt; END ;;
CREATE PROCEDURE `IDEMPOTENT_ADD_FOREIGN_KEY` (
    IN in_table_name VARCHAR(200),
    IN in_foreign_table_name VARCHAR(200),
    IN in_foreign_column_name VARCHAR(200)
)
BEGIN
    DECLARE CONTINUE HANDLER FOR 1061 BEGIN END; SET @ddl = CONCAT('ALTER TABLE ', in_table_name); SET @ddl = CONCAT(@ddl, ' ADD CONSTRAINT fk_', in_foreign_table_name, '_', in_foreign_column_name); SET @ddl = CONCAT(@ddl, ' FOREIGN KEY (', in_foreign_table_name, '_', in_foreign_column_name, ')'); SET @ddl = CONCAT(@ddl, ' REFERENCES ', in_foreign_table_name, '(', in_foreign_column_name, ')'); PREPARE stmt FROM @ddl; EXECUTE stmt; DEALLOCATE PREPARE stmt; END ;;
CREATE PROCEDURE `IDEMPOTENT_ADD_KEY` (
		IN in_index_name VARCHAR(200)
    , IN in_table_name VARCHAR(200)
    , IN in_key_definition VARCHAR(1000)
)
BEGIN
    DECLARE CONTINUE HANDLER FOR 1061 BEGIN END; SET @ddl = CONCAT('ALTER TABLE ', in_table_name); SET @ddl = CONCAT(@ddl, ' ', ' ADD KEY ') ; SET @ddl = CONCAT(@ddl, ' ', in_index_name); SET @ddl = CONCAT(@ddl, ' ', in_key_definition); PREPARE stmt FROM @ddl; EXECUTE stmt; DEALLOCATE PREPARE stmt; END ;;
CREATE PROCEDURE `IDEMPOTENT_ADD_UNIQUE_KEY` (
    IN in_table_name VARCHAR(200)
, IN in_key_name VARCHAR(200)
, IN in_key_definition VARCHAR(1000)
)
BEGIN
    DECLARE CONTINUE HANDLER FOR 1061 BEGIN END; SET @ddl = CONCAT('ALTER TABLE ', in_table_name); SET @ddl = CONCAT(@ddl, ' ', 'ADD UNIQUE KEY ', in_key_name); SET @ddl = CONCAT(@ddl, ' ', in_key_definition); PREPARE stmt FROM @ddl; EXECUTE stmt; DEALLOCATE PREPARE stmt; END ;;
CREATE PROCEDURE `IDEMPOTENT_CHANGE_COLUMN` (
    IN in_table_name VARCHAR(200)
    , IN in_column_name VARCHAR(200)
    , IN in_column_new_name VARCHAR(200)
    , IN in_column_new_definition VARCHAR(1000)
)
BEGIN
    DECLARE CONTINUE HANDLER FOR 1054 BEGIN END; SET @ddl = CONCAT('ALTER TABLE ', in_table_name); SET @ddl = CONCAT(@ddl, ' ', 'CHANGE COLUMN') ; SET @ddl = CONCAT(@ddl, ' ', in_column_name); SET @ddl = CONCAT(@ddl, ' ', in_column_new_name); SET @ddl = CONCAT(@ddl, ' ', in_column_new_definition); PREPARE stmt FROM @ddl; EXECUTE stmt; DEALLOCATE PREPARE stmt; END ;;
CREATE PROCEDURE `IDEMPOTENT_CREATE_UNIQUE_INDEX` (
		IN in_index_name VARCHAR(200)
    , IN in_table_name VARCHAR(200)
    , IN in_index_definition VARCHAR(1000)
)
BEGIN
    DECLARE CONTINUE HANDLER FOR 1061 BEGIN END; SET @ddl = CONCAT('CREATE UNIQUE INDEX ', in_index_name); SET @ddl = CONCAT(@ddl, ' ', ' ON ') ; SET @ddl = CONCAT(@ddl, ' ', in_table_name); SET @ddl = CONCAT(@ddl, ' ', in_index_definition); PREPARE stmt FROM @ddl; EXECUTE stmt; DEALLOCATE PREPARE stmt; END ;;
CREATE PROCEDURE `IDEMPOTENT_DROP_FOREIGN_KEY` (
		IN in_table_name VARCHAR(200),
        IN in_foreign_key_name VARCHAR(200)
)
BEGIN
    DECLARE CONTINUE HANDLER FOR 1091, 1025 BEGIN END; SET @ddl = CONCAT('ALTER TABLE ', in_table_name); SET @ddl = CONCAT(@ddl, ' ', ' DROP FOREIGN KEY '); SET @ddl = CONCAT(@ddl, ' ', in_foreign_key_name); PREPARE stmt FROM @ddl; EXECUTE stmt; DEALLOCATE PREPARE stmt; END ;;
CREATE PROCEDURE `IDEMPOTENT_DROP_INDEX` (
		IN in_index_name VARCHAR(200)
    , IN in_table_name VARCHAR(200)
)
BEGIN
    DECLARE CONTINUE HANDLER FOR 1091 BEGIN END; SET @ddl = CONCAT('DROP INDEX ', in_index_name); SET @ddl = CONCAT(@ddl, ' ', ' ON ') ; SET @ddl = CONCAT(@ddl, ' ', in_table_name); PREPARE stmt FROM @ddl; EXECUTE stmt; DEALLOCATE PREPARE stmt; END ;;
CREATE PROCEDURE `IDEMPOTENT_INSERT_GUESTOS_HYPERVISOR_MAPPING`(
                            IN in_hypervisor_type VARCHAR(32),
                            IN in_hypervisor_version VARCHAR(32),
                            IN in_guest_os_name VARCHAR(255),
                            IN in_guest_os_id BIGINT(20) UNSIGNED,
                            IN is_user_defined int(1) UNSIGNED)
BEGIN
        IF NOT EXISTS ((SELECT * FROM `guest_os_hypervisor` WHERE
            hypervisor_type=in_hypervisor_type AND
            hypervisor_version=in_hypervisor_version AND
            guest_os_id = in_guest_os_id))
        THEN
                INSERT INTO `guest_os_hypervisor` (
                        uuid,
                        hypervisor_type,
                        hypervisor_version,
                        guest_os_name,
                        guest_os_id,
                        created,
                        is_user_defined)
                        VALUES (
                            UUID(),
                            in_hypervisor_type,
                            in_hypervisor_version,
                            in_guest_os_name,
                            in_guest_os_id,
                            utc_timestamp(),
                            is_user_defined
                        ); END IF; END ;;
DELIMITER ;
USE `cloud_usage`;
DELIMITER ;;
CREATE PROCEDURE `IDEMPOTENT_ADD_COLUMN` (
    IN in_table_name VARCHAR(200)
, IN in_column_name VARCHAR(200)
, IN in_column_definition VARCHAR(1000)
)
BEGIN
    DECLARE CONTINUE HANDLER FOR 1060 BEGIN END; SET @ddl = CONCAT('ALTER TABLE ', in_table_name); SET @ddl = CONCAT(@ddl, ' ', 'ADD COLUMN') ; SET @ddl = CONCAT(@ddl, ' ', in_column_name); SET @ddl = CONCAT(@ddl, ' ', in_column_definition); PREPARE stmt FROM @ddl; EXECUTE stmt; DEALLOCATE PREPARE stmt; END ;;
CREATE PROCEDURE `IDEMPOTENT_ADD_UNIQUE_INDEX` (
    IN in_table_name VARCHAR(200)
, IN in_index_name VARCHAR(200)
, IN in_index_definition VARCHAR(1000)
)
BEGIN
    DECLARE CONTINUE HANDLER FOR 1061 BEGIN END; SET @ddl = CONCAT('ALTER TABLE ', in_table_name); SET @ddl = CONCAT(@ddl, ' ', 'ADD UNIQUE INDEX ', in_index_name); SET @ddl = CONCAT(@ddl, ' ', in_index_definition); PREPARE stmt FROM @ddl; EXECUTE stmt; DEALLOCATE PREPARE stmt; END ;;
CREATE PROCEDURE `IDEMPOTENT_CHANGE_COLUMN` (
    IN in_table_name VARCHAR(200)
    , IN in_old_column_name VARCHAR(200)
    , IN in_new_column_name VARCHAR(200)
    , IN in_column_definition VARCHAR(1000)
)
BEGIN
    DECLARE CONTINUE HANDLER FOR 1060 BEGIN END; SET @ddl = CONCAT('ALTER TABLE ', in_table_name); SET @ddl = CONCAT(@ddl, ' ', ' CHANGE COLUMN') ; SET @ddl = CONCAT(@ddl, ' ', in_old_column_name); SET @ddl = CONCAT(@ddl, ' ', in_new_column_name); SET @ddl = CONCAT(@ddl, ' ', in_column_definition); PREPARE stmt FROM @ddl; EXECUTE stmt; DEALLOCATE PREPARE stmt; END ;;
CREATE PROCEDURE `IDEMPOTENT_DROP_INDEX` (
    IN in_index_name VARCHAR(200)
, IN in_table_name VARCHAR(200)
)
BEGIN
    DECLARE CONTINUE HANDLER FOR 1091 BEGIN END; SET @ddl = CONCAT('DROP INDEX ', in_index_name); SET @ddl = CONCAT(@ddl, ' ', ' ON ') ; SET @ddl = CONCAT(@ddl, ' ', in_table_name); PREPARE stmt FROM @ddl; EXECUTE stmt; DEALLOCATE PREPARE stmt; END ;;
DELIMITER ;
