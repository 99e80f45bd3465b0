-- MariaDB dump
/*!40101 SET NAMES utf8mb4 */;
/*M!999999\- enable the sandbox mode */ 
USE `cloud`;
CREATE TABLE `t` (
  `id` bigint NOT NULL,
  `b` varbinary(8),
  `c` text,
  PRIMARY KEY (`id`),
  KEY `i_c` (`c`(10)),
  UNIQUE KEY `u_b` (`b`)
) ENGINE=InnoDB;
INSERT INTO `t` (`id`,`b`,`c`) VALUES (1,0x0102,'a\'b'),(2,NULL,"x;y"),(3,'',-1.5e3);
