DELIMITER ;;
CREATE PROCEDURE `p`() BEGIN SELECT 1; SELECT `cloud`.`x`.y FROM `cloud_usage`.`z`; END ;;
DELIMITER ;
# comment
CREATE DATABASE IF NOT EXISTS `cloud` /*!40100 DEFAULT CHARACTER SET utf8mb4 */;
INSERT INTO t VALUES (b'101',X'ff','\0\n\t\Z'),(0,1,2);
CREATE TABLE `s` (`id` int DEFAULT nextval(`cloud`.`seq`)) /* plain */;
REPLACE INTO `cloud`.`s` VALUE (1) ;
