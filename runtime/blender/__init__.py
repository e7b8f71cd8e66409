"""Blender host integration of the runtime (issue 22), torch-free and bpy-free except ``addon``.

* ``rig``: armature bones (names, rest and pose world matrices as numpy arrays) -> ``runtime.formats.Motion``, the
  joint map of the rig, and the inverse: SMPL rotations back onto the rig's bones.
* ``adapter``: the one place the add-on calls ``runtime.takes`` (score, repair) and ``runtime.fit`` (complete).
* ``package``: builds the installable extension zip (``poseprior blender-addon --out poseprior_blender.zip``).
* ``addon``: the Blender extension itself (imports ``bpy``; only Blender imports it).
"""
