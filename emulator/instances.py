"""(being written)"""
def reconcile(cloud):
    pass
def apply_hypervisor_event(session, config, instance_id, state):
    pass
