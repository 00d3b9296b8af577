module etcd-backup-agent/test/gozip

go 1.19
