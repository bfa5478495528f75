from twisted.application.service import ServiceMaker

workerd = ServiceMaker("nommer workerd", "nommer.workerd.tap", "Runs a nommer worker: leases jobs from the queue and encodes them.", "workerd")
