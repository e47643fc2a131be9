-- Run once by the MySQL image when the data volume is new. The image creates MYSQL_USER with
-- rights on MYSQL_DATABASE only; the pipeline needs its own schemas (prefix 'neuralreg').
GRANT ALL PRIVILEGES ON `neuralreg%`.* TO 'neuralreg'@'%';
FLUSH PRIVILEGES;
